"""The notifier's work: take the outbox entries that are due, tell each
person by the channels configured, and record how it went.

Any number of notifiers may run (replicas of its Deployment): each entry
is leased to one at a time (matcher/notices/outbox.py). A delivery that
fails for now is tried again later; one refused for good, or failing too
often, is dead and shown to operators. The person's address is read from
the sealed directory at the moment of sending, and never logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.fernet import MultiFernet

from services.matcher.notices.day_sheets import DAY_SHEET_HOUR, DaySheets
from services.matcher.notices.outbox import Due, Outbox
from services.matcher.notices.state import NoticeState
from services.matcher.notices.writer import REMINDERS, NoticeKind
from services.matcher.survey import links
from services.notifier import smtp, webhook
from services.notifier.invitation import Invitation, Method, uid_for
from services.notifier.mail import compose_mail
from services.notifier.smtp import DeliveryFailed, SmtpTarget
from services.notifier.wording import DayItem, Notice, Words, calendar_title, compose, compose_day

log = logging.getLogger("eap.notifier")

MAIL, HOOK = "mail", "hook"  # the channels, as an entry records them
INVITING = {
    NoticeKind.CONFIRMED: Method.REQUEST,
    NoticeKind.CHANGED: Method.REQUEST,
    NoticeKind.CANCELLED: Method.CANCEL,
}


class AddressBook(Protocol):
    async def address_for_notice(self, employee_id: str) -> str: ...


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: bytes


@dataclass(frozen=True)
class Channels:
    mail: SmtpTarget | None = None
    hook: Webhook | None = None
    organizer: str = smtp.DEFAULT_SENDER  # the programme's mailbox, in invitations
    page: str = ""  # the booking page's address, in every message
    language: str = "zh_TW"


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        addresses: AddressBook,
        channels: Channels,
        owner: str,
        reminders: Sequence[timedelta] = REMINDERS,
        day_sheets: DaySheets | None = None,
        day_sheet_hour: int | None = DAY_SHEET_HOUR,
        link_keys: MultiFernet | None = None,
    ):
        # The data keys that open a survey notice's sealed link (survey/links.py).
        self._link_keys = link_keys
        self._outbox = outbox
        self._addresses = addresses
        self._channels = channels
        self._owner = owner
        self._reminders = reminders
        self._day_sheets = day_sheets
        self._day_sheet_hour = day_sheet_hour

    async def run_once(self, now: datetime) -> dict[str, int]:
        """Writes the reminders and the counselors' day sheets whose time
        has come, then delivers what is due now; counts the outcomes by
        state."""
        await self._outbox.schedule_reminders(now, self._reminders)
        if self._day_sheets is not None:
            await self._day_sheets.schedule(now, self._day_sheet_hour)
        outcomes: dict[str, int] = {}
        for due in await self._outbox.claim(self._owner, now):
            try:
                state = await self._deliver(due, now)
            except DeliveryFailed as failure:
                state = await self._outbox.failed(
                    due, self._owner, now, str(failure), failure.permanent
                )
                log.warning(
                    "a notice was not delivered",
                    extra={"notice": due.notice_id, "reason": str(failure), "then": state.value},
                )
            else:
                why = (
                    "" if state is NoticeState.SENT else "nothing to send, or nobody to receive it"
                )
                await self._outbox.sent(due, self._owner, now, state, why)
            outcomes[state.value] = outcomes.get(state.value, 0) + 1
        return outcomes

    async def _words(self, due: Due) -> Words | None:
        """What the entry says; None for a day sheet whose sessions were
        all cancelled since it was written (nothing to send)."""
        kind = NoticeKind(due.kind)
        if kind is NoticeKind.DAY_SHEET:
            assert self._day_sheets is not None  # only they write day sheets
            day = await self._day_sheets.sessions(due.employee_id, due.start)
            items = [DayItem(s.start, s.minutes, s.modality, s.place) for s in day]
            return (
                compose_day(items, self._channels.page, self._channels.language) if items else None
            )
        if kind is NoticeKind.SURVEY:
            token = links.unseal(due.place, self._link_keys) if self._link_keys else None
            if token is None:
                raise DeliveryFailed("no data key at hand opens the survey link", permanent=True)
            notice = Notice(
                kind=kind,
                start=due.start,
                modality=due.modality,
                hold_until=due.hold_until,
                page=self._channels.page,
                survey_token=token,
            )
            return compose(notice, self._channels.language)
        notice = Notice(
            kind=kind,
            start=due.start,
            modality=due.modality,
            place=due.place if due.modality == "in_person" else "",
            video_link=due.place if due.modality == "video" else "",
            hold_until=due.hold_until,
            page=self._channels.page,
        )
        return compose(notice, self._channels.language)

    async def _deliver(self, due: Due, now: datetime) -> NoticeState:
        """Sends the entry by every channel not yet done; SENT, or VOID for
        a day sheet with nothing left on it or a counselor no channel
        reaches (a courtesy, not a message anyone is owed: no dead letter
        and no alert every morning for a counselor without an address), and
        for a survey where no booking page is configured to answer it on."""
        kind = NoticeKind(due.kind)
        if kind is NoticeKind.SURVEY and not self._channels.page:
            return NoticeState.VOID  # a link needs the page's address (EAP_BOOKING_PAGE_URL)
        words = await self._words(due)
        if words is None:
            return NoticeState.VOID
        reached = bool(due.delivered_by)
        if self._channels.mail is not None and MAIL not in due.delivered_by:
            address = await self._addresses.address_for_notice(due.employee_id)
            if address:
                method = INVITING.get(kind)
                invitation = (
                    Invitation(
                        uid=uid_for(due.session_key),
                        sequence=due.sequence,
                        start=due.start,
                        minutes=due.minutes,
                        summary=calendar_title(self._channels.language),
                        description=words.text,
                        organizer=self._channels.organizer,
                        attendee=address,
                        location=due.place,
                    )
                    if method is not None
                    else None
                )
                message = compose_mail(
                    due.notice_id, address, words, now, invitation, method or Method.REQUEST
                )
                await smtp.send(self._channels.mail, message)
                await self._outbox.delivered_by(due, self._owner, MAIL)
                reached = True
        if self._channels.hook is not None and HOOK not in due.delivered_by:
            body = json.dumps(
                {
                    "delivery_id": due.notice_id,
                    "kind": kind.value,
                    "employee_id": due.employee_id,  # pseudonymous: the county knows whom
                    "start": due.start.isoformat(),
                    "minutes": due.minutes,
                    "modality": due.modality,
                    "subject": words.subject,
                    "text": words.text,
                },
                ensure_ascii=False,
            ).encode()
            await webhook.deliver(
                self._channels.hook.url, self._channels.hook.secret, due.notice_id, body
            )
            await self._outbox.delivered_by(due, self._owner, HOOK)
            reached = True
        if not reached:
            if kind is NoticeKind.DAY_SHEET:
                return NoticeState.VOID
            raise DeliveryFailed("no channel reaches this person", permanent=True)
        return NoticeState.SENT
