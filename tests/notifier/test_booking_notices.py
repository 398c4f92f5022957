"""A booking's life writes its notices in the same transactions (the booking
state machine's TOLD table), and the notifier delivers them: over gRPC, on
SQLite and PostgreSQL, with a real SMTP server."""

from __future__ import annotations

import icalendar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.notices.outbox import Outbox
from services.matcher.notices.rows import NoticeRow
from services.matcher.registry.directory import Contact
from services.matcher.service import MatcherService
from services.notifier.relay import Channels, Relay
from services.notifier.smtp import SmtpTarget
from services.runtime.auth import Identity, Role, set_identity
from services.runtime.clock import now
from tests.conftest import Suite
from tests.matcher.test_booking import case, hold, slots, submit
from tests.notifier.test_channels import Inbox, calendar_part


def matcher_of(suite: Suite) -> MatcherService:
    assert suite.server is not None
    (service,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
    return service


async def notices(service: MatcherService) -> list[tuple[str, str, int, str]]:
    """(kind, session key, sequence, state) of every notice, oldest first."""
    async with async_sessionmaker(service.engine)() as session:
        rows = await session.scalars(select(NoticeRow).order_by(NoticeRow.created_at))
        return [(r.kind, r.session_key, r.sequence, r.state) for r in rows]


async def test_a_booking_moved_and_cancelled_tells_its_person_each_time(
    suite: Suite, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    service = matcher_of(suite)
    await submit(suite, case())
    found = await slots(suite)
    ahead = now().timestamp() + 2 * 86400  # two days ahead: no reminder is due yet
    first = next(s for s in found if s.start.seconds >= ahead)
    held = await hold(suite, first)
    assert await notices(service) == []  # a hold is nobody's news
    confirmed = (
        await suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id=held.booking_id))
    ).booking
    key = confirmed.booking_id
    told = await notices(service)
    assert [(k, s, n) for k, s, n, _ in told] == [("confirmed", key, 0)]
    # Moved: the same invitation, a higher sequence; the old reminders void.
    later = next(s for s in found if s.start.seconds > confirmed.start.seconds)
    new = (
        await suite.matcher.HoldSlot(
            pb.HoldSlotRequest(
                case_id="K1",
                counselor_id=later.counselor_id,
                start=later.start,
                replaces_booking_id=confirmed.booking_id,
            )
        )
    ).booking
    moved = await suite.matcher.RescheduleBooking(
        pb.RescheduleBookingRequest(booking_id=confirmed.booking_id, new_booking_id=new.booking_id)
    )
    await suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=moved.booking.booking_id))
    told = await notices(service)
    assert [(k, s, n) for k, s, n, _ in told if k != "reminder"] == [
        ("confirmed", key, 0),
        ("changed", key, 1),
        ("cancelled", key, 2),
    ]
    assert [k for k, *_ in told if k == "reminder"] == []  # none was due
    # The notifier delivers the three, in order, as one calendar entry's life.
    set_identity(Identity("E1", Role.EMPLOYEE))
    await service.directory.set_contact("E1", Contact("某人", "", "e1@county.example"))
    set_identity(Identity("notifier", Role.SERVICE))
    relay = Relay(
        Outbox(service.engine),
        service.directory,
        Channels(mail=SmtpTarget.from_url(f"smtp://127.0.0.1:{port}")),
        "notifier-1",
    )
    assert await relay.run_once(now()) == {"sent": 3}
    methods = []
    for message in box.messages:
        calendar = icalendar.Calendar.from_ical(calendar_part(message))
        (event,) = calendar.walk("VEVENT")
        methods.append((str(calendar["method"]), int(str(event["sequence"]))))
    assert methods == [("REQUEST", 0), ("REQUEST", 1), ("CANCEL", 2)]
    assert {m["To"] for m in box.messages} == {"e1@county.example"}
