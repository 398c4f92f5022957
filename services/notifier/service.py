"""The notifier as the runtime starts it (`eapctl serve notifier`, its own
Deployment): it works in the matcher's database, where the outbox and the
sealed directory are, and delivers what is due every
EAP_NOTIFIER_POLL_SECONDS. Any number of replicas may run: each notice is
leased to one at a time (matcher/notices/outbox.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from pathlib import Path

from grpc import aio

from eap.notifier.v1 import notifier_pb2 as pb
from eap.notifier.v1 import notifier_pb2_grpc
from services.matcher.notices.day_sheets import DaySheets
from services.matcher.notices.outbox import Outbox
from services.matcher.notices.state import NoticeState
from services.matcher.registry.directory import Directory, load_keys
from services.matcher.service import MatcherService
from services.notifier import metrics
from services.notifier.relay import Channels, Relay, Webhook
from services.notifier.smtp import SmtpTarget
from services.runtime import clock
from services.runtime.auth import Identity, Role, set_identity
from services.runtime.config import Settings
from services.runtime.errors import ConfigError
from services.runtime.server import Runtime
from services.runtime.service_base import DatabaseService

log = logging.getLogger("eap.notifier")
IDENTITY = Identity("notifier", Role.SERVICE)  # who reads the directory, in the audit trail


def channels(settings: Settings) -> Channels:
    """The channels EAP_SMTP_URL and EAP_WEBHOOK_URL configure."""
    try:
        mail = SmtpTarget.from_url(settings.smtp_url) if settings.smtp_url else None
    except ValueError as wrong:
        raise ConfigError("EAP_SMTP_URL", str(wrong)) from None
    hook = None
    if settings.webhook_url:
        if not settings.webhook_secret_file:
            raise ConfigError("EAP_WEBHOOK_SECRET_FILE", "is required with EAP_WEBHOOK_URL")
        secret = Path(settings.webhook_secret_file).read_bytes().strip()
        hook = Webhook(settings.webhook_url, secret)
    return Channels(
        mail=mail,
        hook=hook,
        organizer=mail.sender if mail else Channels.organizer,
        page=settings.booking_page_url,
        language=settings.default_language,
    )


class NotifierService(DatabaseService):
    name = "notifier"
    full_name = "eap.notifier.v1.NotifierService"
    store = MatcherService.name
    migrations = MatcherService.migrations
    version_table = MatcherService.version_table
    audited = True

    async def started(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.outbox = Outbox(self.engine)
        keys = load_keys(settings.data_keys_file, settings.development)
        directory = Directory(self.engine, keys, self.audit)
        owner = f"{socket.gethostname()}-{os.getpid()}-{self.tenant}"
        configured = channels(settings)
        reminders = tuple(timedelta(hours=h) for h in settings.reminder_hours)
        # One delivery pass at a time in this process: the demo's final pass
        # and the background loop would otherwise each hold half the notices.
        self.delivering = asyncio.Lock()
        self.relay = Relay(
            self.outbox,
            directory,
            configured,
            owner,
            reminders,
            DaySheets(self.engine),
            settings.day_sheet_hour,
            keys,
        )
        if configured.mail is None and configured.hook is None:
            # Nothing to deliver by: the notices wait, and go out once a
            # channel is configured (a development server, the demo).
            log.info("no EAP_SMTP_URL or EAP_WEBHOOK_URL: notices wait in the outbox")
            return
        runtime.spawn(self._deliver_forever(settings.notifier_poll_seconds), "notifier")

    async def _deliver_forever(self, every: float) -> None:
        set_identity(IDENTITY)
        while True:
            try:
                async with self.delivering:
                    outcomes = await self.relay.run_once(clock.now())
                for outcome, count in outcomes.items():
                    metrics.DELIVERIES.labels(outcome).inc(count)
                await self._measure()
            except Exception:  # a store is down: the health probe reports it
                log.warning("notice delivery failed", exc_info=True)
            await asyncio.sleep(every)

    async def deliver_due(self) -> dict[str, int]:
        """Delivers everything due now, waiting for a pass under way; returns
        the outbox's counts by state afterwards."""
        set_identity(IDENTITY)
        async with self.delivering:
            while outcomes := await self.relay.run_once(clock.now()):
                for outcome, count in outcomes.items():
                    metrics.DELIVERIES.labels(outcome).inc(count)
        return await self.outbox.counts()

    async def _measure(self) -> None:
        counts = await self.outbox.counts()
        for state in NoticeState:
            metrics.NOTICES.labels(self.tenant, state.value).set(counts.get(state.value, 0))
        metrics.OLDEST_DUE.labels(self.tenant).set(await self.outbox.waited_seconds(clock.now()))

    def servicer(self) -> object:
        return NotifierServicer(self.outbox)

    def add_to_server(self, servicer: object, server: aio.Server) -> None:
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]


class NotifierServicer(notifier_pb2_grpc.NotifierServiceServicer):
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def GetOutboxStatus(
        self, request: pb.GetOutboxStatusRequest, context: object
    ) -> pb.GetOutboxStatusResponse:
        counts = await self._outbox.counts()
        return pb.GetOutboxStatusResponse(
            **{state.value: counts.get(state.value, 0) for state in NoticeState},
            oldest_due_seconds=await self._outbox.waited_seconds(clock.now()),
        )

    async def RetryDeadNotices(
        self, request: pb.RetryDeadNoticesRequest, context: object
    ) -> pb.RetryDeadNoticesResponse:
        return pb.RetryDeadNoticesResponse(retried=await self._outbox.retry_dead(clock.now()))
