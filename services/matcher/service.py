"""The matcher service as the runtime starts it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from grpc import aio

from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher import retention
from services.matcher.booking.availability import Availability
from services.matcher.booking.changes import CaseChanges
from services.matcher.booking.groups import GroupBookings
from services.matcher.booking.records import CaseRecords
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.tenant_policy import BookingPolicies
from services.matcher.booking.waitlist import Waitlist
from services.matcher.booking.waitlist_offers import Offering
from services.matcher.booking.watch import ConsistencyWatch
from services.matcher.calendar_port import CalendarPort
from services.matcher.optimization.jobs import JobRunner, Jobs
from services.matcher.optimization.snapshot import Snapshots
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.directory import Directory, load_keys
from services.matcher.registry.staff import StaffDirectory
from services.matcher.registry.store import CounselorRegistry
from services.matcher.servicer import MatcherServicer
from services.matcher.survey.answering import Survey
from services.runtime.server import Runtime
from services.runtime.service_base import DatabaseService
from services.runtime.service_identity import ServiceCredentials

log = logging.getLogger("eap.matcher")
UPKEEP_SECONDS = 30.0
PURGE_SECONDS = 3600.0
FIRST_CALENDAR_SECONDS = 0.5
CALENDAR_SECONDS = 300.0
FIRST_CHECK_SECONDS = 60.0  # after start: steps a restart cut short are reconciled by then


class MatcherService(DatabaseService):
    name = "matcher"
    full_name = "eap.matcher.v1.MatcherService"
    migrations = Path(__file__).parent / "migrations"
    version_table = "alembic_version_matcher"
    audited = True
    # They book, move or give back what a slot hold or a booking took.
    finishing_methods = frozenset(
        {"ConfirmBooking", "CancelBooking", "CancelGroupSession", "WithdrawCase"}
    )

    async def started(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.registry = CounselorRegistry(self.engine)
        credentials = ServiceCredentials(self.name, settings)
        self.quota = QuotaPort(
            lambda: settings.quota_address or f"127.0.0.1:{runtime.port}", credentials
        )
        calendar = CalendarPort(
            lambda: settings.calendar_address or f"127.0.0.1:{runtime.port}", credentials
        )
        self.calendar = calendar
        data_keys = load_keys(settings.data_keys_file, settings.development)
        self.staff = StaffDirectory(self.engine)
        self.cases = CaseRecords(self.engine, self.staff, self.audit)
        self.search = SlotSearch(
            self.engine,
            self.quota,
            calendar,
            settings.slot_hold_seconds,
            settings.crisis_deadline_hours,
            self.audit,
        )
        self.availability = Availability(self.engine, self.quota, calendar, self.audit)
        self.bookings = BookingSaga(self.engine, self.quota, data_keys)
        self.waitlist = Waitlist(self.engine, self.search)
        # The offering pass reads cases for no person: its own search, unaudited.
        offering_search = SlotSearch(
            self.engine,
            self.quota,
            calendar,
            settings.slot_hold_seconds,
            settings.crisis_deadline_hours,
        )
        self.offering = Offering(self.engine, offering_search, settings.offer_hours, self.tenant)
        self.changes = CaseChanges(self.engine, self.bookings, self.audit)
        self.groups = GroupBookings(
            self.engine, self.quota, calendar, settings.slot_hold_seconds, data_keys
        )
        self.jobs = Jobs(
            self.engine,
            Snapshots(self.engine, self.quota, calendar, settings.crisis_deadline_hours),
            self.search,
            self.bookings,
            self.audit,
        )
        self.directory = Directory(self.engine, data_keys, self.audit)
        self._retention_days = settings.retention_days
        self.watch = ConsistencyWatch(self.engine, self.quota, settings.retention_days, self.tenant)
        runtime.spawn(self._upkeep(), "matcher-upkeep")
        if settings.consistency_seconds > 0:
            runtime.spawn(self._watch(settings.consistency_seconds), "matcher-consistency")
        runtime.spawn(JobRunner(self.engine).run_forever(), "matcher-jobs")
        if settings.waitlist_seconds > 0:
            runtime.spawn(self._offer_freed(settings.waitlist_seconds), "matcher-waitlist")

    async def _upkeep(self) -> None:
        """Fetches the office calendar (soon after start, then every few
        minutes), writes down lapsed holds and finishes bookings a crash cut
        short; once an hour, purges case details past their retention. All
        are safe on every replica at once."""
        await asyncio.sleep(FIRST_CALENDAR_SECONDS)  # the server is listening by then
        fetched_at = -CALENDAR_SECONDS
        purged_at = -PURGE_SECONDS
        while True:
            now = asyncio.get_running_loop().time()
            stale = now - fetched_at >= CALENDAR_SECONDS or not self.calendar.from_service
            if stale and await self.calendar.refresh():
                fetched_at = now
            try:
                await self.bookings.sweep()
                await self.bookings.reconcile()
                if now - purged_at >= PURGE_SECONDS:
                    await retention.purge(self.engine, self.audit, self._retention_days)
                    purged_at = now
            except Exception:  # a store is down: the health probe reports it
                log.warning("booking upkeep failed", exc_info=True)
            await asyncio.sleep(UPKEEP_SECONDS)

    async def _offer_freed(self, every: float) -> None:
        """The waitlist's offering pass (booking/waitlist_offers.py) every
        `every` seconds, on every replica at once: its own loop, beside the
        upkeep's, so that its pace is its own setting (EAP_WAITLIST_SECONDS);
        an offer that lapsed is written down by the pass itself, not left to
        the sweep."""
        await asyncio.sleep(min(every, FIRST_CALENDAR_SECONDS * 2))  # the calendar is in
        while True:
            try:
                await self.offering.run()
            except Exception:  # a store or the quota service is down: probes report it
                log.warning("waitlist offering failed", exc_info=True)
            await asyncio.sleep(every)

    async def _watch(self, every: float) -> None:
        """The check across services, every `every` seconds, on every
        replica (each reports its own gauges: alert on the max)."""
        await asyncio.sleep(min(every, FIRST_CHECK_SECONDS))
        while True:
            try:
                await self.watch.check()
            except Exception:  # the quota service or a store is down: its own alerts say so
                log.warning("consistency check failed", exc_info=True)
            await asyncio.sleep(every)

    def servicer(self) -> object:
        return MatcherServicer(
            registry=self.registry,
            directory=self.directory,
            cases=self.cases,
            changes=self.changes,
            search=self.search,
            availability=self.availability,
            bookings=self.bookings,
            groups=self.groups,
            jobs=self.jobs,
            staff=self.staff,
            policies=BookingPolicies(self.engine),
            engine=self.engine,
            waitlist=self.waitlist,
            offering=self.offering,
            survey=Survey(self.engine),
        )

    def add_to_server(self, servicer: object, server: aio.Server) -> None:
        matcher_pb2_grpc.add_MatcherServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.quota.close()
        await super().close()
