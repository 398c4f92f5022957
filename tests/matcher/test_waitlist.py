"""The waitlist over gRPC (issue 16, item 2; acceptance 2): a case nothing
fits waits; a slot a cancellation frees is offered to the first waiting
case it fits, crisis first, as a hold with a deadline and an OFFER notice;
an offer that lapses (the clock moved) passes to the next; accepting is
ConfirmBooking of the offer; the refusals; who sees which entries. On
SQLite and PostgreSQL, with the offering pass run by the test (the
background loop is off) so that each step is seen.

The world: one week after MONDAY, counselor C001 has a single slot the
cases want (15 March 2027, 09:00); a blocker case books it first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.waitlist import requeue_first
from services.matcher.booking.waitlist_rows import WaitlistRow
from services.matcher.notices.rows import NoticeRow
from services.matcher.orm import BookingRow
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.rules.waitlist import MAX_LAPSES, OFFER_HOURS
from services.runtime import clock
from tests.access import Secured
from tests.conftest import MONDAY, Backend, Suite, _running, at
from tests.matcher.test_booking import rule, span
from tests.quota.test_rpcs import details, refused

NEXT = MONDAY + dt.timedelta(weeks=1)  # 15 March 2027, an office Monday
WANTED = at(NEXT, 9)


@pytest.fixture
async def suite(backend: Backend, march_2027: None) -> AsyncIterator[Suite]:
    """The booking suite with the offering pass off: the test runs it."""
    backend = replace(backend, settings=replace(backend.settings, waitlist_seconds=0))
    async with _running(backend, [QuotaService(), MatcherService()]) as running:
        yield running


def matcher_of(suite: Suite) -> MatcherService:
    assert suite.server is not None
    (service,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
    return service


async def offer_pass(suite: Suite) -> int:
    return await matcher_of(suite).offering.run()


def narrow_case(
    case_id: str, employee: str, kind: pb.CaseKind.ValueType = pb.CASE_KIND_GENERAL
) -> pb.Case:
    """A case free only on NEXT from 09:00 to 10:00: one slot per counselor."""
    return pb.Case(
        case_id=case_id,
        employee_id=employee,
        category=pb.CATEGORY_PSYCHOLOGICAL,
        kind=kind,
        sessions_wanted=1,
        minutes=60,
        modalities=[pb.MODALITY_VIDEO],
        availability=[span(NEXT, 9, 10)],
        time_off=pb.TIME_OFF_LEAVE,
    )


def wishes() -> pb.WaitlistWishes:
    return pb.WaitlistWishes(
        window_start=at(MONDAY, 0),
        window_end=at(MONDAY + dt.timedelta(days=21), 0),
        counselor_id="C001",
    )


async def submit(suite: Suite, case: pb.Case) -> None:
    await suite.matcher.SubmitCase(pb.SubmitCaseRequest(case=case))


async def join(suite: Suite, case_id: str, key: str = "wait-1") -> pb.WaitlistEntry:
    request = pb.JoinWaitlistRequest(case_id=case_id, request_id=key, wishes=wishes())
    return (await suite.matcher.JoinWaitlist(request)).entry


async def book_slot(suite: Suite, case_id: str, counselor: str = "C001") -> str:
    request = pb.HoldSlotRequest(case_id=case_id, counselor_id=counselor, start=WANTED)
    held = (await suite.matcher.HoldSlot(request)).booking
    await suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id=held.booking_id))
    return held.booking_id


async def entry_of(suite: Suite, case_id: str) -> pb.WaitlistEntry:
    return (await suite.matcher.GetCase(pb.GetCaseRequest(case_id=case_id))).waitlist_entry


async def booking(suite: Suite, booking_id: str) -> BookingRow:
    sessions = async_sessionmaker(matcher_of(suite).engine, expire_on_commit=False)
    async with sessions() as session:
        row = await session.get(BookingRow, booking_id)
        assert row is not None
        return row


async def offers_told(suite: Suite) -> list[NoticeRow]:
    sessions = async_sessionmaker(matcher_of(suite).engine, expire_on_commit=False)
    async with sessions() as session:
        rows = await session.scalars(
            select(NoticeRow).where(NoticeRow.kind == "offer").order_by(NoticeRow.created_at)
        )
        return list(rows)


async def blocked_world(suite: Suite) -> str:
    """The blocker's booking of C001 at WANTED; returns its id."""
    await submit(suite, narrow_case("KB", "E9"))
    return await book_slot(suite, "KB")


async def test_a_freed_slot_goes_crisis_first_lapses_to_the_next_and_is_taken(
    suite: Suite,
) -> None:
    blocker = await blocked_world(suite)
    await submit(suite, narrow_case("K1", "E1"))
    general = await join(suite, "K1")
    assert general.state == pb.WAITLIST_ENTRY_STATE_WAITING and general.position == 1
    clock.advance(dt.timedelta(minutes=5))
    await submit(suite, narrow_case("K2", "E2", pb.CASE_KIND_CRISIS))
    crisis = await join(suite, "K2")
    assert crisis.crisis and crisis.position == 1  # ahead of the earlier general case
    assert (await entry_of(suite, "K1")).position == 2
    assert await offer_pass(suite) == 0  # nothing is free

    await suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=blocker))
    assert await offer_pass(suite) == 1
    offered = await entry_of(suite, "K2")
    assert offered.state == pb.WAITLIST_ENTRY_STATE_OFFERED
    held = await booking(suite, offered.offer_booking_id)
    assert (held.case_id, held.counselor_id, held.state) == ("K2", "C001", S.HELD.value)
    assert held.start == WANTED.ToDatetime(tzinfo=dt.UTC)
    deadline = clock.now() + dt.timedelta(hours=OFFER_HOURS)
    assert held.hold_expires_at is not None
    assert abs(held.hold_expires_at - deadline) < dt.timedelta(seconds=5)
    assert offered.offer_expires_at.ToDatetime(tzinfo=dt.UTC) == held.hold_expires_at
    (told,) = await offers_told(suite)
    assert (told.employee_id, told.booking_id) == ("E2", held.booking_id)
    assert told.hold_until == held.hold_expires_at  # the notice says until when
    assert (await entry_of(suite, "K1")).state == pb.WAITLIST_ENTRY_STATE_WAITING
    assert await offer_pass(suite) == 0  # one offer at a time, and the slot is held

    clock.advance(dt.timedelta(hours=OFFER_HOURS, minutes=1))  # the offer lapses
    assert await offer_pass(suite) == 1
    lapsed = await entry_of(suite, "K2")
    assert (lapsed.state, lapsed.lapses, lapsed.position) == (
        pb.WAITLIST_ENTRY_STATE_WAITING,
        1,
        1,
    )
    assert (await booking(suite, held.booking_id)).state == S.RELEASED.value
    passed_on = await entry_of(suite, "K1")
    assert passed_on.state == pb.WAITLIST_ENTRY_STATE_OFFERED
    second = await booking(suite, passed_on.offer_booking_id)
    assert (second.case_id, second.start) == ("K1", held.start)
    assert [n.employee_id for n in await offers_told(suite)] == ["E2", "E1"]

    confirmed = await suite.matcher.ConfirmBooking(
        pb.ConfirmBookingRequest(booking_id=passed_on.offer_booking_id)
    )
    assert confirmed.booking.state == pb.BOOKING_STATE_BOOKED
    taken = await entry_of(suite, "K1")
    assert (taken.state, taken.position) == (pb.WAITLIST_ENTRY_STATE_BOOKED, 0)
    line = await suite.matcher.ListWaitlist(pb.ListWaitlistRequest())
    assert [e.case_id for e in line.entries] == ["K2"]  # still waiting for another slot


async def test_a_declined_offer_passes_on_and_the_line_gives_up_after_the_last(
    suite: Suite,
) -> None:
    blocker = await blocked_world(suite)
    await submit(suite, narrow_case("K1", "E1"))
    await join(suite, "K1")
    await suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=blocker))
    assert await offer_pass(suite) == 1
    offer = (await entry_of(suite, "K1")).offer_booking_id
    await suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=offer))  # declined
    declined = await entry_of(suite, "K1")
    assert (declined.state, declined.lapses) == (pb.WAITLIST_ENTRY_STATE_WAITING, 1)
    # The slot it declined is never offered to it again: nothing else fits it.
    assert await offer_pass(suite) == 0
    # C002 at the same time fits once the case accepts any counselor: a
    # second entry of the same case is refused while one waits.
    error = await refused(
        suite.matcher.JoinWaitlist(
            pb.JoinWaitlistRequest(case_id="K1", request_id="again", wishes=wishes())
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(error) == "ALREADY_WAITING"
    assert MAX_LAPSES > 1


async def test_joining_is_refused_while_a_slot_fits_and_retries_answer_the_same(
    suite: Suite,
) -> None:
    await submit(suite, narrow_case("K1", "E1"))
    error = await refused(join(suite, "K1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(error) == "SLOTS_AVAILABLE"
    await blocked_world(suite)
    first = await join(suite, "K1")
    again = await suite.matcher.JoinWaitlist(
        pb.JoinWaitlistRequest(case_id="K1", request_id="wait-1", wishes=wishes())
    )
    assert not again.created and again.entry.entry_id == first.entry_id
    other = wishes()
    other.latest_start_time = "11:00"
    error = await refused(
        suite.matcher.JoinWaitlist(
            pb.JoinWaitlistRequest(case_id="K1", request_id="wait-1", wishes=other)
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    left = await suite.matcher.LeaveWaitlist(pb.LeaveWaitlistRequest(entry_id=first.entry_id))
    assert left.entry.state == pb.WAITLIST_ENTRY_STATE_LEFT
    # Left, the case may join again under a new request.
    assert (await join(suite, "K1", "wait-2")).state == pb.WAITLIST_ENTRY_STATE_WAITING


async def test_bad_wishes_are_refused_naming_each_field(suite: Suite) -> None:
    await submit(suite, narrow_case("K1", "E1"))
    bad = pb.WaitlistWishes(
        window_start=at(MONDAY + dt.timedelta(days=5), 0),
        window_end=at(MONDAY, 0),
        earliest_start_time="9am",
        modalities=[pb.Modality.ValueType(99)],
        counselor_id="not an id!",
    )
    error = await refused(
        suite.matcher.JoinWaitlist(pb.JoinWaitlistRequest(case_id="K1", request_id="", wishes=bad))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    fields = {v.field for v in violations}
    assert {
        "request_id",
        "wishes.window_end",
        "wishes.earliest_start_time",
        "wishes.modalities[0]",
        "wishes.counselor_id",
    } <= fields, fields
    error = await refused(suite.matcher.ListWaitlist(pb.ListWaitlistRequest(page_token="bm9wZQ==")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_case_that_books_another_way_leaves_the_line(suite: Suite) -> None:
    blocker = await blocked_world(suite)
    await submit(suite, narrow_case("K1", "E1"))
    waiting = await join(suite, "K1")
    await suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=blocker))
    await book_slot(suite, "K1", "C002")  # found a time itself, before any pass
    assert await offer_pass(suite) == 0
    assert (await entry_of(suite, "K1")).state == pb.WAITLIST_ENTRY_STATE_LEFT
    assert waiting.entry_id == (await entry_of(suite, "K1")).entry_id


async def test_a_counselors_cancellation_puts_the_case_first_of_its_kind(
    suite: Suite,
) -> None:
    """requeue_first, as the cancellation step calls it in its transaction."""
    blocker = await blocked_world(suite)
    await submit(suite, narrow_case("K1", "E1"))
    await join(suite, "K1")
    await submit(suite, narrow_case("K2", "E2", pb.CASE_KIND_CRISIS))
    await join(suite, "K2")
    engine = matcher_of(suite).engine
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    for _ in range(2):  # a retried step requeues once
        async with sessions() as session, session.begin():
            row = await session.get(BookingRow, blocker)
            assert row is not None
            await requeue_first(session, row, clock.now())
    line = (await suite.matcher.ListWaitlist(pb.ListWaitlistRequest())).entries
    # The crisis case first; the requeued one before the general case that
    # waited longer.
    assert [(e.case_id, e.requeued) for e in line] == [
        ("K2", False),
        ("KB", True),
        ("K1", False),
    ]
    # A crisis case already in line, requeued, goes ahead of the crises
    # that waited longer, keeping its entry.
    clock.advance(dt.timedelta(minutes=1))
    await submit(suite, narrow_case("K3", "E3", pb.CASE_KIND_CRISIS))
    k3 = await join(suite, "K3")
    assert k3.position == 2  # behind K2
    async with sessions() as session, session.begin():
        stand_in = BookingRow(**{**_row_like(await booking(suite, blocker)), "case_id": "K3"})
        await requeue_first(session, stand_in, clock.now())
    line = (await suite.matcher.ListWaitlist(pb.ListWaitlistRequest())).entries
    assert [(e.case_id, e.requeued, e.position) for e in line] == [
        ("K3", True, 1),
        ("K2", False, 2),
        ("KB", True, 3),
        ("K1", False, 4),
    ]
    assert line[0].entry_id == k3.entry_id
    async with sessions() as session:
        rows = list(await session.scalars(select(WaitlistRow)))
    assert sorted(r.case_id for r in rows) == ["K1", "K2", "K3", "KB"]  # K3 moved, not added


async def test_a_counselors_cancellation_over_grpc_requeues_the_case_and_offers_it_first(
    suite: Suite,
) -> None:
    """CancelBooking by the counselor puts the blocker's case in line ahead
    of a general case that waited longer, and the offering pass gives it the
    slot its own cancellation freed."""
    blocker = await blocked_world(suite)
    await submit(suite, narrow_case("K1", "E1"))
    await join(suite, "K1")
    clock.advance(dt.timedelta(minutes=5))
    await suite.matcher.CancelBooking(
        pb.CancelBookingRequest(
            booking_id=blocker, reason="counselor ill", cancelled_by=pb.CANCELLED_BY_COUNSELOR
        )
    )
    line = (await suite.matcher.ListWaitlist(pb.ListWaitlistRequest())).entries
    assert [(e.case_id, e.requeued) for e in line] == [("KB", True), ("K1", False)]
    assert await offer_pass(suite) == 1
    offered = await entry_of(suite, "KB")
    assert offered.state == pb.WAITLIST_ENTRY_STATE_OFFERED
    assert (await entry_of(suite, "K1")).state == pb.WAITLIST_ENTRY_STATE_WAITING
    held = await booking(suite, offered.offer_booking_id)
    assert (held.case_id, held.counselor_id, held.state) == ("KB", "C001", S.HELD.value)


def _row_like(row: BookingRow) -> dict[str, object]:
    """A booking's columns, for a stand-in row that is never stored."""
    return {c.key: getattr(row, c.key) for c in BookingRow.__table__.columns}


async def test_employees_see_only_their_own_entries(secured_suite: Secured) -> None:
    suite = secured_suite
    admin = suite.as_("admin", "eap-admin")
    for case in (narrow_case("KB", "E9"), narrow_case("K1", "E1"), narrow_case("K2", "E2")):
        await suite.matcher.SubmitCase(pb.SubmitCaseRequest(case=case), metadata=admin)
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(case_id="KB", counselor_id="C001", start=WANTED), metadata=admin
    )
    await suite.matcher.ConfirmBooking(
        pb.ConfirmBookingRequest(booking_id=held.booking.booking_id), metadata=admin
    )
    one, two = suite.as_("employee", "E1"), suite.as_("employee", "E2")
    request = pb.JoinWaitlistRequest(case_id="K1", request_id="w", wishes=wishes())
    mine = (await suite.matcher.JoinWaitlist(request, metadata=one)).entry
    request = pb.JoinWaitlistRequest(case_id="K2", request_id="w", wishes=wishes())
    theirs = (await suite.matcher.JoinWaitlist(request, metadata=two)).entry
    own = await suite.matcher.ListWaitlist(pb.ListWaitlistRequest(), metadata=one)
    assert [e.entry_id for e in own.entries] == [mine.entry_id]
    error = await refused(
        suite.matcher.ListWaitlist(pb.ListWaitlistRequest(employee_id="E2"), metadata=one)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(
        suite.matcher.LeaveWaitlist(pb.LeaveWaitlistRequest(entry_id=theirs.entry_id), metadata=one)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    request = pb.JoinWaitlistRequest(case_id="K2", request_id="x", wishes=wishes())
    error = await refused(suite.matcher.JoinWaitlist(request, metadata=one))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    counselor = suite.as_("counselor", "C001")
    error = await refused(suite.matcher.ListWaitlist(pb.ListWaitlistRequest(), metadata=counselor))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    whole = await suite.matcher.ListWaitlist(pb.ListWaitlistRequest(), metadata=admin)
    assert [e.case_id for e in whole.entries] == ["K1", "K2"]
