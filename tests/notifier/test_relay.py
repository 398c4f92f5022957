"""The outbox and the notifier together, on SQLite and PostgreSQL, with a
real SMTP server: what is told, when, once, and what a failure costs."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import icalendar
import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking import tenant_policy
from services.matcher.booking.tenant_policy import BookingPolicy
from services.matcher.notices.day_sheets import DaySheets
from services.matcher.notices.outbox import LEASE, Outbox
from services.matcher.notices.rows import NoticeRow
from services.matcher.notices.state import NoticeState
from services.matcher.notices.writer import NoticeKind, tell
from services.matcher.orm import BookingRow
from services.matcher.registry.directory import Contact, Directory
from services.matcher.survey import links
from services.matcher.survey.invite import invite
from services.notifier.relay import Channels, Relay, Webhook
from services.notifier.smtp import SmtpTarget
from services.notifier.wording import NEVER_SHOWN
from services.runtime import database
from services.runtime.auth import Identity, Role, set_identity
from tests.conftest import Backend
from tests.notifier.test_channels import Inbox, Receiver, calendar_part
from tests.replicas import free_port

TAIPEI = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=TAIPEI)
START = dt.datetime(2027, 3, 9, 10, 0, tzinfo=TAIPEI)


@dataclass
class World:
    engine: AsyncEngine
    outbox: Outbox
    directory: Directory
    inbox: Inbox
    port: int

    def relay(self, owner: str = "notifier-1", port: int | None = None) -> Relay:
        target = SmtpTarget.from_url(f"smtp://127.0.0.1:{port or self.port}")
        return Relay(self.outbox, self.directory, Channels(mail=target), owner)

    def relay_with_day_sheets(self, owner: str = "n-1") -> Relay:
        target = SmtpTarget.from_url(f"smtp://127.0.0.1:{self.port}")
        return Relay(
            self.outbox,
            self.directory,
            Channels(mail=target),
            owner,
            (),
            DaySheets(self.engine),
            7,
        )

    def relay_with(self, reminders: tuple[dt.timedelta, ...]) -> Relay:
        target = SmtpTarget.from_url(f"smtp://127.0.0.1:{self.port}")
        return Relay(self.outbox, self.directory, Channels(mail=target), "n-1", reminders)

    async def book(
        self,
        booking_id: str,
        employee: str = "E1",
        start: dt.datetime = START,
        booked_at: dt.datetime = NOW,
    ) -> None:
        booking = BookingRow(
            booking_id=booking_id,
            case_id=f"K-{booking_id}",
            employee_id=employee,
            counselor_id="C001",
            provider_id="P1",
            start=start,
            end=start + dt.timedelta(hours=1),
            minutes=60,
            modality="in_person",
            state="booked",
            quota_hold_id="",
            funded=True,
            updated_at=booked_at,
            location="Pingtung office 3F",
        )
        async with async_sessionmaker(self.engine)() as session, session.begin():
            session.add(booking)
            await session.flush()
            await tell(session, booking, NoticeKind.CONFIRMED, booked_at)

    async def cancel(self, booking_id: str) -> None:
        async with async_sessionmaker(self.engine)() as session, session.begin():
            booking = await session.get(BookingRow, booking_id)
            assert booking is not None
            booking.state = "cancelled"
            await tell(session, booking, NoticeKind.CANCELLED, NOW)


@pytest.fixture
async def world(backend: Backend, inbox: tuple[Inbox, int]) -> AsyncIterator[World]:
    engine = database.create_engine(backend.settings.database_url)
    directory = Directory(engine, MultiFernet([Fernet(Fernet.generate_key())]), None)
    for employee in ("E1", "E2", "E3"):
        set_identity(Identity(employee, Role.EMPLOYEE))
        await directory.set_contact(employee, Contact("某人", "", f"{employee}@county.example"))
    set_identity(Identity("notifier", Role.SERVICE))
    yield World(engine, Outbox(engine), directory, *inbox)
    await engine.dispose()


def methods(inbox: Inbox) -> list[tuple[str, str, int]]:
    """(METHOD, UID, SEQUENCE) of each message's invitation, in order."""
    seen = []
    for message in inbox.messages:
        if not any(p.get_content_type() == "text/calendar" for p in message.walk()):
            continue  # a reminder: words only
        calendar = icalendar.Calendar.from_ical(calendar_part(message))
        (event,) = calendar.walk("VEVENT")
        seen.append((str(calendar["method"]), str(event["uid"]), int(str(event["sequence"]))))
    return seen


async def test_a_booking_is_told_at_once_reminded_and_its_cancellation_cancels_it(
    world: World,
) -> None:
    await world.book("b-1")
    assert await world.relay().run_once(NOW) == {"sent": 1}
    (confirmation,) = world.inbox.messages
    assert confirmation["To"] == "E1@county.example"
    assert methods(world.inbox) == [("REQUEST", "b-1@eap-suite", 0)]
    # Nothing more until the reminder's time: 24 hours before.
    assert await world.relay().run_once(START - dt.timedelta(hours=25)) == {}
    assert await world.relay().run_once(START - dt.timedelta(hours=24)) == {"sent": 1}
    assert "Reminder" in world.inbox.messages[1]["Subject"] or "提醒" in str(
        world.inbox.messages[1]["Subject"]
    )
    await world.cancel("b-1")
    assert await world.relay().run_once(START - dt.timedelta(hours=23)) == {"sent": 1}
    assert methods(world.inbox)[-1] == ("CANCEL", "b-1@eap-suite", 1)
    # The 2-hour reminder of a cancelled session never goes out.
    assert await world.relay().run_once(START - dt.timedelta(hours=1)) == {}
    counts = await world.outbox.counts()
    assert counts == {"sent": 3}


async def test_reminders_go_out_at_the_hours_configured_and_only_the_latest_due(
    world: World,
) -> None:
    await world.book("b-1")
    await world.relay().run_once(NOW)  # the confirmation
    two_days = world.relay_with((dt.timedelta(hours=48),))
    assert await two_days.run_once(START - dt.timedelta(hours=49)) == {}
    assert await two_days.run_once(START - dt.timedelta(hours=48)) == {"sent": 1}
    assert await two_days.run_once(START - dt.timedelta(hours=47)) == {}  # once
    # A notifier down through the 24-hour mark sends only the 2-hour one.
    later = START + dt.timedelta(days=3)
    await world.book("b-2", employee="E2", start=later)
    await world.relay().run_once(NOW)
    assert await world.relay().run_once(later - dt.timedelta(hours=1)) == {"sent": 1}
    assert await world.relay().run_once(later - dt.timedelta(minutes=30)) == {}
    # A session booked after a reminder's time has its confirmation instead.
    latest = START + dt.timedelta(days=6)
    await world.book("b-3", employee="E3", start=latest, booked_at=latest - dt.timedelta(hours=3))
    assert await world.relay().run_once(latest - dt.timedelta(hours=3)) == {"sent": 1}
    assert await world.relay().run_once(latest - dt.timedelta(hours=2)) == {"sent": 1}
    # Confirmation and reminder for each: six messages.
    assert len(world.inbox.messages) == 6


async def test_the_tenants_booking_policy_sets_its_own_reminder_hours(world: World) -> None:
    await world.book("b-1")
    await world.relay().run_once(NOW)  # the confirmation
    sessions = async_sessionmaker(world.engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await tenant_policy.save(session, BookingPolicy(reminder_hours=(72.0,)), NOW)
    # The deployment's 24 and 2 hours give way to the tenant's 72.
    assert await world.relay().run_once(START - dt.timedelta(hours=73)) == {}
    assert await world.relay().run_once(START - dt.timedelta(hours=72)) == {"sent": 1}
    assert await world.relay().run_once(START - dt.timedelta(hours=23)) == {}
    assert await world.relay().run_once(START - dt.timedelta(hours=1)) == {}
    async with sessions() as session, session.begin():
        await tenant_policy.save(session, BookingPolicy(reminder_hours=None), NOW)
    assert await world.relay().run_once(START - dt.timedelta(minutes=90)) == {"sent": 1}


async def test_a_counselor_hears_of_their_day_each_morning_once(world: World) -> None:
    set_identity(Identity("admin", Role.ADMIN))
    await world.directory.set_contact("C001", Contact("林諮商師", "", "lin@county.example"))
    set_identity(Identity("notifier", Role.SERVICE))
    await world.book("b-1")  # 10:00, in person
    await world.book("b-2", employee="E2", start=START + dt.timedelta(hours=3))
    await world.book("b-3", employee="E3", start=START + dt.timedelta(hours=5))
    await world.book("b-4", employee="E1", start=START + dt.timedelta(days=1))  # the next day
    await world.cancel("b-3")
    await world.relay().run_once(NOW)  # the confirmations and the cancellation
    told = len(world.inbox.messages)
    morning = START.replace(hour=6, minute=30)
    first, second = world.relay_with_day_sheets("n-1"), world.relay_with_day_sheets("n-2")
    assert await first.run_once(morning) == {}  # before seven
    seven = START.replace(hour=7)
    outcomes = await asyncio.gather(first.run_once(seven), second.run_once(seven))
    assert sum(o.get("sent", 0) for o in outcomes) == 1  # once, whoever sends it
    assert await first.run_once(seven + dt.timedelta(hours=1)) == {}
    (sheet,) = world.inbox.messages[told:]
    assert sheet["To"] == "lin@county.example"
    text = sheet.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "10:00-11:00" in text and "13:00-14:00" in text
    assert "15:00" not in text and "某人" not in text  # the cancelled one; nobody's name
    assert not [w for w in NEVER_SHOWN if w in str(sheet["Subject"]).lower()]


async def test_a_day_sheet_nobody_can_receive_is_void_not_a_dead_letter(world: World) -> None:
    """A counselor without an address is told nothing, and operators are
    not alerted about it every morning."""
    await world.book("b-1")  # C001 has no address in the directory
    await world.relay().run_once(NOW)
    seven = START.replace(hour=7)
    assert await world.relay_with_day_sheets().run_once(seven) == {"void": 1}
    assert await world.relay_with_day_sheets().run_once(seven + dt.timedelta(hours=1)) == {}
    assert (await world.outbox.counts()).get("dead", 0) == 0


async def test_two_notifiers_at_once_send_each_message_once(world: World) -> None:
    for n in range(30):
        await world.book(f"b-{n}", employee=f"E{1 + n % 3}")
    first, second = world.relay("notifier-1"), world.relay("notifier-2")
    sent = 0
    while True:  # both at once, round after round, until nothing is left
        outcomes = await asyncio.gather(first.run_once(NOW), second.run_once(NOW))
        if not any(outcomes):
            break
        sent += sum(o.get("sent", 0) for o in outcomes)
    assert sent == 30
    ids = [m["Message-ID"] for m in world.inbox.messages]
    assert len(ids) == len(set(ids)) == 30


async def test_a_notifier_that_dies_mid_delivery_leaves_its_messages_to_another(
    world: World,
) -> None:
    await world.book("b-1")
    (taken,) = await world.outbox.claim("notifier-dead", NOW)  # and then it dies
    assert await world.relay("notifier-2").run_once(NOW + LEASE / 2) == {}  # still its lease
    assert await world.relay("notifier-2").run_once(NOW + LEASE * 2) == {"sent": 1}
    assert len(world.inbox.messages) == 1
    assert not await world.outbox.sent(taken, "notifier-dead", NOW + LEASE * 3)  # too late


async def test_a_mail_server_down_for_a_while_delays_messages_and_loses_none(
    world: World,
) -> None:
    await world.book("b-1")
    await world.book("b-2", employee="E2")
    down = world.relay(port=free_port())  # nothing listens there
    assert await down.run_once(NOW) == {"pending": 2}
    assert await down.run_once(NOW + dt.timedelta(seconds=30)) == {}  # backing off
    assert await down.run_once(NOW + dt.timedelta(minutes=1)) == {"pending": 2}
    assert await world.relay().run_once(NOW + dt.timedelta(minutes=2)) == {}  # still backing off
    assert await world.relay().run_once(NOW + dt.timedelta(minutes=3)) == {"sent": 2}
    assert sorted(m["To"] for m in world.inbox.messages) == [
        "E1@county.example",
        "E2@county.example",
    ]


async def test_someone_with_no_address_is_a_dead_notice_for_operators(world: World) -> None:
    await world.book("b-1", employee="E9")  # not in the directory
    assert await world.relay().run_once(NOW) == {"dead": 1}
    assert (await world.outbox.counts())["dead"] == 1
    assert await world.outbox.retry_dead(NOW) == 1
    assert (await world.outbox.counts())[NoticeState.PENDING.value] == 1


async def test_a_webhook_failing_for_a_while_resends_the_webhook_not_the_e_mail(
    world: World,
    receiver: Receiver,
) -> None:
    receiver.answers.append(503)  # the county's messaging is down at first
    target = SmtpTarget.from_url(f"smtp://127.0.0.1:{world.port}")
    both = Relay(
        world.outbox,
        world.directory,
        Channels(mail=target, hook=Webhook(receiver.url, b"county-secret")),
        "notifier-1",
    )
    await world.book("b-1")
    assert await both.run_once(NOW) == {"pending": 1}  # mailed; the webhook to try again
    assert await both.run_once(NOW + dt.timedelta(minutes=1)) == {"sent": 1}
    assert len(world.inbox.messages) == 1  # the e-mail once
    assert len(receiver.got) == 2 and receiver.got[0][1] == receiver.got[1][1]  # the same body


async def test_a_survey_link_goes_out_by_mail_and_is_then_forgotten(world: World) -> None:
    keys = MultiFernet([Fernet(Fernet.generate_key())])
    await world.book("b-1")
    sessions = async_sessionmaker(world.engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        booking = await session.get(BookingRow, "b-1")
        assert booking is not None
        booking.state, booking.attendance = "completed", "attended"
        await invite(session, booking, NOW, keys)
    target = SmtpTarget.from_url(f"smtp://127.0.0.1:{world.port}")
    without_page = Relay(
        world.outbox, world.directory, Channels(mail=target), "n-1", (), None, 7, keys
    )
    page = Channels(mail=target, page="https://eap.county.example/")
    relay = Relay(world.outbox, world.directory, page, "n-2", (), None, 7, keys)
    async with sessions() as session:
        (sealed,) = await session.scalars(select(NoticeRow.place).where(NoticeRow.kind == "survey"))
    token = links.unseal(sealed, keys)
    assert token is not None and token not in sealed
    assert await relay.run_once(NOW) == {"sent": 2}  # the confirmation and the survey
    survey = world.inbox.messages[-1]
    text = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"https://eap.county.example/survey.html#token={token}" in text
    assert not any(p.get_content_type() == "text/calendar" for p in survey.walk())
    async with sessions() as session:
        (place,) = await session.scalars(select(NoticeRow.place).where(NoticeRow.kind == "survey"))
    assert place == ""  # delivered: not even the keys lead from the session to its link
    # Where no page is configured to answer on, a survey is not sent at all.
    await world.book("b-2", employee="E2")
    async with sessions() as session, session.begin():
        other = await session.get(BookingRow, "b-2")
        assert other is not None
        other.state, other.attendance = "completed", "attended"
        await invite(session, other, NOW, keys)
    assert await without_page.run_once(NOW) == {"sent": 1, "void": 1}
