"""Online booking over gRPC: cases, slots, holds, bookings, and the quota they spend.

The quota and matcher services run in one server, as `eapctl serve all` does,
on SQLite and on PostgreSQL + Redis. The clock is moved to Monday 8 March
2027, 08:00 in Taipei, so that the county's 2027 budgets apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.service import CalendarService
from services.cli import consistency
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.state import step
from services.matcher.orm import BookingRow
from services.matcher.service import MatcherService
from services.quota.orm import Hold
from services.quota.service import QuotaService
from services.runtime import clock, database
from services.runtime.server import start
from services.runtime.tenancy import DEFAULT_TENANT
from tests.conftest import MONDAY, Backend, Suite, at, during
from tests.county import RATE, account, changed, counselor, enrol, seed
from tests.quota.test_rpcs import details, refused

TAIPEI = dt.timezone(dt.timedelta(hours=8))
SHIPPED = Path(__file__).resolve().parents[2] / "services" / "office_calendar" / "data"


def span(day: dt.date, start: int, end: int) -> pb.TimeRange:
    return pb.TimeRange(start=at(day, start), end=at(day, end))


def local(stamp: Timestamp) -> dt.datetime:
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(TAIPEI)


K1, K2 = "K1", "K2"


def case(case_id: str = "K1", employee: str = "E1", **changes: object) -> pb.Case:
    message = pb.Case(
        case_id=case_id,
        employee_id=employee,
        agency_id="PT-HR",
        staff_category="official",
        category=pb.CATEGORY_PSYCHOLOGICAL,
        kind=pb.CASE_KIND_GENERAL,
        sessions_wanted=2,
        minutes=60,
        modalities=[pb.MODALITY_VIDEO],
        availability=[
            span(MONDAY, 9, 17),
            span(MONDAY + dt.timedelta(weeks=1), 9, 17),
        ],
        time_off=pb.TIME_OFF_OFFICIAL_LEAVE,
    )
    return changed(message, changes)


async def submit(suite: Suite, message: pb.Case) -> pb.Case:
    """Submits `message` as an administrator, who may name cases."""
    return (await suite.matcher.SubmitCase(pb.SubmitCaseRequest(case=message))).case


async def slots(suite: Suite, case_id: str = K1, days: int = 14) -> list[pb.Slot]:
    request = pb.FindSlotsRequest(
        case_id=case_id,
        window_start=at(MONDAY, 0),
        window_end=at(MONDAY + dt.timedelta(days=days), 0),
        max_slots=200,
    )
    return list((await suite.matcher.FindSlots(request)).slots)


async def hold(suite: Suite, slot: pb.Slot, case_id: str = K1) -> pb.Booking:
    request = pb.HoldSlotRequest(case_id=case_id, counselor_id=slot.counselor_id, start=slot.start)
    return (await suite.matcher.HoldSlot(request)).booking


async def book(suite: Suite, slot: pb.Slot, case_id: str = K1) -> pb.Booking:
    held = await hold(suite, slot, case_id)
    request = pb.ConfirmBookingRequest(booking_id=held.booking_id)
    return (await suite.matcher.ConfirmBooking(request)).booking


async def agency(suite: Suite) -> qpb.Balance:
    request = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    return (await suite.quota.GetBalance(request)).balance


def rule(error: grpc.aio.AioRpcError) -> str:
    failure = details(error)["PreconditionFailure"]
    return str(failure.violations[0].type)  # type: ignore[attr-defined]


async def test_find_hold_confirm_books_and_spends(suite: Suite) -> None:
    stored = await submit(suite, case())
    assert stored.submitted_at.seconds > 0
    found = await slots(suite)
    # Monday windows 09:00-12:00 and 13:30-17:00 of two counselors, two weeks.
    first = found[0]
    assert (local(first.start).hour, local(first.start).minute) == (9, 0)
    assert first.modality == pb.MODALITY_VIDEO
    assert {local(s.start).date() for s in found} == {MONDAY, MONDAY + dt.timedelta(weeks=1)}
    assert all(local(s.start).weekday() == 0 for s in found)

    booking = await book(suite, first)
    assert booking.state == pb.BOOKING_STATE_BOOKED
    spent = await agency(suite)
    assert (spent.spent, spent.held) == (RATE, 0)
    # One session a week: the case's next slots are in the following week only.
    later = await slots(suite)
    assert later and all(local(s.start).date() == MONDAY + dt.timedelta(weeks=1) for s in later)
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
    assert [b.booking_id for b in got.bookings] == [booking.booking_id]
    # A retried confirmation returns the booking and spends nothing more.
    again = await suite.matcher.ConfirmBooking(
        pb.ConfirmBookingRequest(booking_id=booking.booking_id)
    )
    assert again.booking.state == pb.BOOKING_STATE_BOOKED
    assert (await agency(suite)).spent == RATE


async def test_a_held_slot_is_nobody_elses(suite: Suite) -> None:
    await submit(suite, case())
    await submit(suite, case("K2", "E2"))
    first = (await slots(suite))[0]
    await hold(suite, first)
    error = await refused(hold(suite, first, K2))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(error) == "SLOT_TAKEN"
    # The other case is offered everything but that slot.
    theirs = await slots(suite, K2)
    taken = (first.counselor_id, first.start.seconds)
    assert taken not in {(s.counselor_id, s.start.seconds) for s in theirs}
    # Overlapping, not equal, starts clash too.
    half_past = pb.Slot(counselor_id=first.counselor_id, start=at(MONDAY, 9, 30))
    assert rule(await refused(hold(suite, half_past, K2))) == "SLOT_TAKEN"


async def test_a_lapsed_hold_frees_the_slot_and_cannot_be_confirmed(suite: Suite) -> None:
    await submit(suite, case())
    await submit(suite, case("K2", "E2"))
    first = (await slots(suite))[0]
    mine = await hold(suite, first)
    clock.advance(dt.timedelta(seconds=601))
    theirs = await hold(suite, first, K2)
    assert theirs.state == pb.BOOKING_STATE_HELD
    error = await refused(
        suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id=mine.booking_id))
    )
    assert rule(error) == "HOLD_EXPIRED"
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)


async def test_a_quota_refusal_books_nothing_and_holds_nothing(suite: Suite) -> None:
    # The employee's year is 360 minutes: three two-hour sessions use it up.
    for week in range(3):
        day = MONDAY + dt.timedelta(weeks=week)
        earlier = await submit(
            suite, case(f"X{week}", minutes=120, availability=[span(day, 9, 12)])
        )
        await book(suite, (await slots(suite, earlier.case_id, days=21))[0], earlier.case_id)
    fourth = MONDAY + dt.timedelta(weeks=3)
    await submit(suite, case(minutes=120, availability=[span(fourth, 9, 12)]))
    assert await slots(suite, days=28) == []  # FindSlots knows the entitlement is spent
    before = await agency(suite)
    held = await hold(suite, pb.Slot(counselor_id="C001", start=at(fourth, 9)))
    error = await refused(
        suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id=held.booking_id))
    )
    assert rule(error) == "EMPLOYEE_ENTITLEMENT"
    after = await agency(suite)
    assert (after.held, after.spent) == (before.held, before.spent)
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
    assert list(got.bookings) == []  # the hold was given up with the refusal


async def test_cancel_gives_the_quota_back(suite: Suite) -> None:
    await submit(suite, case())
    booking = await book(suite, (await slots(suite))[0])
    cancelled = await suite.matcher.CancelBooking(
        pb.CancelBookingRequest(booking_id=booking.booking_id, reason="employee cancelled")
    )
    assert cancelled.booking.state == pb.BOOKING_STATE_CANCELLED
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)
    # The week is free again.
    assert any(local(s.start).date() == MONDAY for s in await slots(suite))


async def test_complete_commits_the_minutes_used(suite: Suite) -> None:
    await submit(suite, case(minutes=90))
    booking = await book(suite, (await slots(suite))[0])
    with during(booking.start):
        done = await suite.matcher.CompleteSession(
            pb.CompleteSessionRequest(booking_id=booking.booking_id, minutes=60)
        )
    assert (done.booking.state, done.booking.minutes) == (pb.BOOKING_STATE_COMPLETED, 60)
    assert (await agency(suite)).spent == RATE
    error = await refused(
        suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=booking.booking_id))
    )
    assert rule(error) == "SESSION_COMPLETED"


async def test_reschedule_within_the_week(suite: Suite) -> None:
    await submit(suite, case())
    found = await slots(suite)
    booking = await book(suite, found[0])
    later = next(s for s in found if local(s.start).hour == 14)
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(
            case_id=K1,
            counselor_id=later.counselor_id,
            start=later.start,
            replaces_booking_id=booking.booking_id,
        )
    )
    moved = await suite.matcher.RescheduleBooking(
        pb.RescheduleBookingRequest(
            booking_id=booking.booking_id, new_booking_id=held.booking.booking_id
        )
    )
    assert moved.booking.state == pb.BOOKING_STATE_BOOKED
    assert moved.previous.state == pb.BOOKING_STATE_CANCELLED
    assert local(moved.booking.start).hour == 14
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, RATE)


async def test_crisis_slots_lead_with_the_deadline(suite: Suite) -> None:
    # Submitted Monday 08:00; 72 hours reach Thursday 08:00. The preferred
    # counselor is only free the next Monday; the other one on Wednesday.
    wednesday = MONDAY + dt.timedelta(days=2)
    crisis = case(
        kind=pb.CASE_KIND_CRISIS,
        preferred_counselor_id="C001",
        availability=[span(wednesday, 18, 21), span(MONDAY + dt.timedelta(weeks=1), 9, 12)],
    )
    await submit(suite, crisis)
    found = await slots(suite)
    assert found[0].within_crisis_deadline
    assert local(found[0].start).date() == wednesday
    late = [s for s in found if not s.within_crisis_deadline]
    assert late and late[0].preferred


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"minutes": 180}, "case.minutes"),
        ({"minutes": 75}, "case.minutes"),
        ({"availability": []}, "case.availability"),
        ({"sessions_wanted": 0}, "case.sessions_wanted"),
        ({"employee_id": ""}, "case.employee_id"),
        ({"category": 0}, "case.category"),
        ({"kind": pb.CASE_KIND_INVOLUNTARY}, "case.referral_reference"),
        ({"modalities": []}, "case.modalities"),
        (
            {"availability": [pb.TimeRange(start=at(MONDAY, 12), end=at(MONDAY, 9))]},
            "case.availability[0].end",
        ),
    ],
)
async def test_bad_cases_are_refused_field_by_field(
    suite: Suite, changes: dict[str, object], field: str
) -> None:
    error = await refused(submit(suite, case(**changes)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(error)["BadRequest"]
    assert field in [v.field for v in bad.field_violations]  # type: ignore[attr-defined]
    missing = await refused(suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1)))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_requests_get_clear_statuses_and_change_nothing(suite: Suite) -> None:
    await submit(suite, case())
    unknown = await refused(suite.matcher.FindSlots(pb.FindSlotsRequest(case_id="nope")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    too_long = pb.FindSlotsRequest(
        case_id=K1, window_start=at(MONDAY, 0), window_end=at(MONDAY + dt.timedelta(90), 0)
    )
    error = await refused(suite.matcher.FindSlots(too_long))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    backwards = pb.FindSlotsRequest(
        case_id=K1, window_start=at(MONDAY, 10), window_end=at(MONDAY, 9)
    )
    assert (await refused(suite.matcher.FindSlots(backwards))).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    off_grid = pb.Slot(counselor_id="C001", start=at(MONDAY, 9, 10))
    assert rule(await refused(hold(suite, off_grid))) == "NOT_BOOKABLE"
    outside = pb.Slot(counselor_id="C001", start=at(MONDAY, 12))  # the counselor's lunch
    assert rule(await refused(hold(suite, outside))) == "NOT_BOOKABLE"
    nobody = pb.Slot(counselor_id="C404", start=at(MONDAY, 9))
    assert (await refused(hold(suite, nobody))).code() == grpc.StatusCode.NOT_FOUND
    no_start = suite.matcher.HoldSlot(pb.HoldSlotRequest(case_id=K1, counselor_id="C001"))
    assert (await refused(no_start)).code() == grpc.StatusCode.INVALID_ARGUMENT
    ghost = suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id="nope"))
    assert (await refused(ghost)).code() == grpc.StatusCode.NOT_FOUND
    # A retried submission returns the stored case; a different one under its id is refused.
    again = await suite.matcher.SubmitCase(pb.SubmitCaseRequest(case=case()))
    assert not again.created
    clash = await refused(submit(suite, case(minutes=90)))
    assert clash.code() == grpc.StatusCode.ALREADY_EXISTS
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
    assert list(got.bookings) == []
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)


async def test_leave_and_extra_hours_change_the_slots(suite: Suite) -> None:
    tuesday = MONDAY + dt.timedelta(days=1)
    with_changes = changed(
        counselor(),
        {
            "exceptions": [
                pb.AvailabilityException(
                    kind=pb.EXCEPTION_KIND_LEAVE, range=span(MONDAY, 9, 12), note="training"
                ),
                pb.AvailabilityException(kind=pb.EXCEPTION_KIND_EXTRA, range=span(tuesday, 9, 11)),
            ]
        },
    )
    await suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=with_changes))
    stored = await suite.matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="C001"))
    assert stored.counselor == with_changes
    await submit(suite, case(availability=[span(MONDAY, 9, 17), span(tuesday, 9, 17)]))
    mine = {
        (local(s.start).date(), local(s.start).hour)
        for s in await slots(suite)
        if s.counselor_id == "C001"
    }
    assert not any(day == MONDAY and hour < 12 for day, hour in mine)  # on leave
    assert (MONDAY, 14) in mine  # the afternoon window stands
    assert {(tuesday, 9), (tuesday, 10)} <= {m for m in mine if m[0] == tuesday}  # extra hours
    on_leave = await refused(hold(suite, pb.Slot(counselor_id="C001", start=at(MONDAY, 9))))
    assert rule(on_leave) == "NOT_BOOKABLE"


@pytest.mark.parametrize(
    ("exception", "field"),
    [
        (
            pb.AvailabilityException(kind=pb.EXCEPTION_KIND_LEAVE, range=span(MONDAY, 12, 9)),
            "counselor.exceptions[0].range.end",
        ),
        (pb.AvailabilityException(range=span(MONDAY, 9, 12)), "counselor.exceptions[0].kind"),
        (
            pb.AvailabilityException(kind=pb.EXCEPTION_KIND_EXTRA),
            "counselor.exceptions[0].range.start",
        ),
    ],
)
async def test_bad_exceptions_are_refused(
    suite: Suite, exception: pb.AvailabilityException, field: str
) -> None:
    bad = changed(counselor(), {"exceptions": [exception]})
    error = await refused(suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=bad)))
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert field in [v.field for v in violations]
    stored = await suite.matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="C001"))
    assert list(stored.counselor.exceptions) == []  # nothing changed


async def test_the_matcher_books_by_the_calendar_services_years(
    backend: Backend, march_2027: None
) -> None:
    """An operator imports a revised 2027 in which Monday 8 March is a
    holiday; once the matcher refreshes, it offers nothing that day."""
    matcher_service = MatcherService()
    server = await start([QuotaService(), matcher_service, CalendarService()], backend.settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            suite = Suite(
                matcher_pb2_grpc.MatcherServiceStub(channel),  # type: ignore[arg-type]
                quota_pb2_grpc.QuotaServiceStub(channel),  # type: ignore[arg-type]
            )
            calendar = calendar_pb2_grpc.CalendarServiceStub(channel)
            await seed(suite.quota)
            await enrol(suite.matcher)
            await suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor()))
            await submit(suite, case())
            assert await matcher_service.calendar.refresh()
            assert any(local(s.start).date() == MONDAY for s in await slots(suite))
            shipped = (SHIPPED / "2027.csv").read_text(encoding="utf-8")
            revised = shipped.replace("20270308,一,0,", "20270308,一,2,颱風假")
            await calendar.ImportOfficeCalendar(
                cpb.ImportOfficeCalendarRequest(year=2027, csv_content=revised.encode("utf-8"))
            )
            assert await matcher_service.calendar.refresh()
            offered = {local(s.start).date() for s in await slots(suite)}
            assert MONDAY not in offered and MONDAY + dt.timedelta(weeks=1) in offered
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def _served(backend: Backend, matcher_service: MatcherService) -> AsyncIterator[Suite]:
    """Quota and `matcher_service` in one server, nothing seeded: for the
    tests that reach into the matcher service or set their own county."""
    server = await start([QuotaService(), matcher_service], backend.settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Suite(
                matcher_pb2_grpc.MatcherServiceStub(channel),  # type: ignore[arg-type]
                quota_pb2_grpc.QuotaServiceStub(channel),  # type: ignore[arg-type]
            )
    finally:
        await server.stop(0)


async def _crash_after(
    service: MatcherService, booking_id: str, source: S, target: S, **values: object
) -> None:
    """Takes one step of the booking's state machine and stops there, as a
    replica that died right after it would have."""
    sessions = async_sessionmaker(service.engine)
    async with sessions() as session, session.begin():
        assert await step(session, booking_id, source, target, clock.now(), **values)


async def test_steps_a_crash_cut_short_are_finished(backend: Backend, march_2027: None) -> None:
    """A confirmation whose quota commit never ran, and a cancellation whose
    quota release never ran: the reconciler finishes both."""
    matcher_service = MatcherService()
    async with _served(backend, matcher_service) as suite:
        await seed(suite.quota)
        await enrol(suite.matcher)
        await suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor()))
        await submit(suite, case())
        await submit(suite, case("K2", "E2"))
        first = (await slots(suite))[0]
        # K1: confirming, its quota reserved, then the replica died before Commit.
        held = await hold(suite, first)
        second = (await slots(suite, K2))[0]
        bookings = matcher_service.bookings
        quota_hold = await matcher_service.quota.reserve(
            f"booking-{held.booking_id}",
            "E1",
            "PT-HR",
            "official",
            "P1",
            first.start.ToDatetime(tzinfo=dt.UTC),
            60,
            300,
            held.booking_id,
        )
        await _crash_after(
            matcher_service, held.booking_id, S.HELD, S.CONFIRMING, quota_hold_id=quota_hold
        )
        # K2: booked and paid for, then cancelled; the replica died before Release.
        paid = await book(suite, second, K2)
        await _crash_after(matcher_service, paid.booking_id, S.BOOKED, S.CANCELLING)
        assert (await agency(suite)).held == RATE  # K1's reservation, not yet spent
        assert await bookings.reconcile() == 0  # too fresh: the step may still be running
        clock.advance(dt.timedelta(seconds=61))
        assert await bookings.reconcile() == 2
        balance = await agency(suite)
        assert (balance.held, balance.spent) == (0, RATE)  # K1 spent; K2 given back
        got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
        assert [b.state for b in got.bookings] == [pb.BOOKING_STATE_BOOKED]
        assert await bookings.reconcile() == 0  # nothing left to finish


async def test_the_hold_a_reschedule_moves_to_cannot_be_cancelled_meanwhile(
    backend: Backend, march_2027: None
) -> None:
    """While a reschedule owns both bookings (the old one moving, the new
    hold confirming), cancelling the new hold answers BOOKING_BUSY: were it
    cancelled, the quota's Move would hand the charge to a cancelled
    booking (found by tests/matcher/test_booking_stateful.py). The move then
    finishes, here by the reconciler, as after a crash."""
    matcher_service = MatcherService()
    async with _served(backend, matcher_service) as suite:
        await seed(suite.quota)
        await enrol(suite.matcher)
        await suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor()))
        await submit(suite, case())
        found = await slots(suite)
        old = await book(suite, found[0])
        later = next(s for s in found if local(s.start).date() != local(found[0].start).date())
        new = (
            await suite.matcher.HoldSlot(
                pb.HoldSlotRequest(
                    case_id=K1,
                    counselor_id=later.counselor_id,
                    start=later.start,
                    replaces_booking_id=old.booking_id,
                )
            )
        ).booking
        # The reschedule's first step, and then its replica stopped.
        await _crash_after(matcher_service, old.booking_id, S.BOOKED, S.MOVING)
        await _crash_after(
            matcher_service,
            new.booking_id,
            S.HELD,
            S.CONFIRMING,
            replaces_booking_id=old.booking_id,
        )
        error = await refused(
            suite.matcher.CancelBooking(pb.CancelBookingRequest(booking_id=new.booking_id))
        )
        assert error.code() == grpc.StatusCode.ABORTED
        assert "BOOKING_BUSY" in (error.details() or "")
        clock.advance(dt.timedelta(seconds=61))
        assert await matcher_service.bookings.reconcile() == 2  # both rows under way
        got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
        assert {b.booking_id: b.state for b in got.bookings} == {
            new.booking_id: pb.BOOKING_STATE_BOOKED
        }
        assert (await agency(suite)).spent == RATE
        assert await _consistent(backend) == []


async def eapctl_verify(backend: Backend) -> tuple[int | None, bytes, bytes]:
    """`eapctl verify` run on the suite's databases: its exit code and output."""
    command = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("eapctl")),
        "verify",
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("EAP_")},
            "DATABASE_URL": backend.settings.database_url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(command.communicate(), 60)
    return command.returncode, out, err


async def _consistent(backend: Backend) -> list[str]:
    """`eapctl verify`'s findings on the suite's databases."""
    matcher = database.create_engine(backend.settings.database_url_for("matcher"))
    quota = database.create_engine(backend.settings.database_url_for("quota"))
    try:
        return [str(p) for p in await consistency.check(matcher, quota)]
    finally:
        await matcher.dispose()
        await quota.dispose()


@pytest.mark.parametrize("reason", ["SLOT_TAKEN", "PROVIDER_CAP", "AGENCY_BUDGET", "HOLD_EXPIRED"])
async def test_a_failed_reschedule_within_the_week_keeps_the_booking(
    suite: Suite, backend: Backend, reason: str
) -> None:
    """Whatever refuses the new slot, the old booking stands as it was,
    charged once, and the caller hears the rule that refused."""
    await submit(suite, case())
    await submit(suite, case("K2", "E2"))
    found = await slots(suite)
    booking = await book(suite, found[0])
    counselor_id = "C002" if reason in ("PROVIDER_CAP", "AGENCY_BUDGET") else "C001"
    later = next(
        s
        for s in found
        if s.counselor_id == counselor_id
        and local(s.start).date() == local(found[0].start).date()
        and local(s.start).hour == 14
    )
    if reason in ("PROVIDER_CAP", "AGENCY_BUDGET"):
        await suite.quota.SetProviderContract(
            qpb.SetProviderContractRequest(
                provider_id="P2",
                fiscal_year=2027,
                hourly_rate_ntd=150_000 if reason == "AGENCY_BUDGET" else RATE,
                cap_minutes=30 if reason == "PROVIDER_CAP" else 6_000,
                reason="test",
            )
        )
    if reason == "SLOT_TAKEN":
        await hold(suite, later, K2)
    request = pb.HoldSlotRequest(
        case_id=K1,
        counselor_id=later.counselor_id,
        start=later.start,
        replaces_booking_id=booking.booking_id,
    )
    try:
        held = (await suite.matcher.HoldSlot(request)).booking
        if reason == "HOLD_EXPIRED":
            clock.advance(dt.timedelta(hours=1))
        error = await refused(
            suite.matcher.RescheduleBooking(
                pb.RescheduleBookingRequest(
                    booking_id=booking.booking_id, new_booking_id=held.booking_id
                )
            )
        )
    except grpc.aio.AioRpcError as refusal:  # the hold itself was refused
        error = refusal
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(error) == reason
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
    assert [(b.booking_id, b.state) for b in got.bookings if b.state != pb.BOOKING_STATE_HELD] == [
        (booking.booking_id, pb.BOOKING_STATE_BOOKED)
    ]
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, RATE)
    assert await _consistent(backend) == []


async def test_a_same_week_move_the_new_years_entitlement_refuses_keeps_the_booking(
    backend: Backend,
) -> None:
    """Monday 31 December 2029 and Wednesday 2 January 2030 share ISO week
    2030-W01 but not a fiscal year: the move is checked against the 2030
    entitlement, which the policy sets at nothing. (The counselor works
    Monday days and Wednesday evenings.) The employee keeps the
    December session, charged once, and hears EMPLOYEE_ENTITLEMENT."""
    december, january = dt.date(2029, 12, 31), dt.date(2030, 1, 2)
    with clock.moved_to(dt.datetime(2029, 12, 24, 8, tzinfo=TAIPEI)):
        async with _served(backend, MatcherService()) as suite:
            await seed(suite.quota, year=2029)
            await enrol(suite.matcher)
            await seed(suite.quota, year=2030, entitlement_minutes=0)
            await suite.matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor()))
            await submit(suite, case(availability=[span(december, 9, 17), span(january, 18, 21)]))
            found = list(
                (
                    await suite.matcher.FindSlots(
                        pb.FindSlotsRequest(
                            case_id=K1,
                            window_start=at(december, 0),
                            window_end=at(january + dt.timedelta(days=1), 0),
                            max_slots=200,
                        )
                    )
                ).slots
            )
            booking = await book(suite, next(s for s in found if local(s.start).date() == december))
            # FindSlots offers nothing in January (nothing to pay it with);
            # the frontend holds the evening all the same.
            assert not any(local(s.start).date() == january for s in found)
            held = (
                await suite.matcher.HoldSlot(
                    pb.HoldSlotRequest(
                        case_id=K1,
                        counselor_id="C001",
                        start=at(january, 18),
                        replaces_booking_id=booking.booking_id,
                    )
                )
            ).booking
            error = await refused(
                suite.matcher.RescheduleBooking(
                    pb.RescheduleBookingRequest(
                        booking_id=booking.booking_id, new_booking_id=held.booking_id
                    )
                )
            )
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert rule(error) == "EMPLOYEE_ENTITLEMENT"
            got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=K1))
            assert [(b.booking_id, b.state) for b in got.bookings] == [
                (booking.booking_id, pb.BOOKING_STATE_BOOKED)
            ]
            pool = qpb.AccountRef(kind=qpb.ACCOUNT_KIND_AGENCY, id="PT-HR", fiscal_year=2029)
            balance = (await suite.quota.GetBalance(qpb.GetBalanceRequest(account=pool))).balance
            assert (balance.held, balance.spent) == (0, RATE)
            assert await _consistent(backend) == []


async def test_verify_names_the_rows_that_break_a_rule(suite: Suite, backend: Backend) -> None:
    """Four corruptions, each found and named by its row."""
    await submit(suite, case())
    await submit(suite, case("K2", "E2"))
    found = await slots(suite)
    first = await book(suite, found[0])
    second = await book(
        suite, next(s for s in found[1:] if s.counselor_id != found[0].counselor_id), K2
    )
    assert await _consistent(backend) == []
    matcher = database.create_engine(backend.settings.database_url_for("matcher"))
    quota = database.create_engine(backend.settings.database_url_for("quota"))
    try:
        bookings, holds = BookingRow.__table__, Hold.__table__
        async with matcher.begin() as connection:
            row = (
                (
                    await connection.execute(
                        select(bookings).where(bookings.c.booking_id == first.booking_id)
                    )
                )
                .mappings()
                .one()
            )
            # A booked session with no charge, in the same ISO week as K1's:
            # two sessions of one employee in one week, too.
            await connection.execute(
                insert(bookings).values({**row, "booking_id": "twin", "quota_hold_id": ""})
            )
            # A charge with no session: K2's booking cancelled behind the ledger's back.
            await connection.execute(
                update(bookings)
                .where(bookings.c.booking_id == second.booking_id)
                .values(state="cancelled")
            )
        async with quota.begin() as connection:
            hold = (
                (
                    await connection.execute(
                        select(holds).where(holds.c.booking_ref == first.booking_id)
                    )
                )
                .mappings()
                .one()
            )
            # K1's session charged twice (a second hold, in another week so
            # the weekly index lets it in).
            await connection.execute(
                insert(holds).values(
                    {**hold, "hold_id": "copy", "idempotency_key": "copy", "iso_week": "2027-W30"}
                )
            )
        problems = [str(p) for p in await consistency.check(matcher, quota)]
    finally:
        await matcher.dispose()
        await quota.dispose()
    assert any(p.startswith("UNCHARGED: booking twin") for p in problems), problems
    assert any(
        p.startswith(f"CHARGED_TWICE: booking {first.booking_id}") and "copy" in p for p in problems
    ), problems
    assert any(
        p.startswith("CHARGE_WITHOUT_SESSION: hold") and "cancelled" in p for p in problems
    ), problems
    assert any(
        p.startswith("WEEKLY_LIMIT: bookings") and "twin" in p and first.booking_id in p
        for p in problems
    ), problems
    # The command says the same, and fails.
    returncode, out, err = await eapctl_verify(backend)
    assert returncode == 1, out + err
    assert b"UNCHARGED: booking twin" in out
    # The matcher's own watch, over the quota's ListCharges, finds the same
    # once the rows have settled, and its gauges say so.
    assert suite.server is not None
    (matcher_service,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
    # Fresh rows' charges are not judged yet (a step may lie between the
    # two reads); two booked sessions in one week are wrong however fresh.
    fresh = await matcher_service.watch.check()
    assert [p.rule for p in fresh] == ["WEEKLY_LIMIT"], fresh
    clock.advance(dt.timedelta(minutes=2))
    watched = sorted(str(p) for p in await matcher_service.watch.check())
    assert watched == sorted(p for p in problems if not p.startswith("LEDGER")), watched
    for kind, count in (("UNCHARGED", 1), ("CHARGED_TWICE", 1), ("WEEKLY_LIMIT", 1)):
        assert (
            REGISTRY.get_sample_value(
                "eap_matcher_consistency_problems", {"tenant": DEFAULT_TENANT, "kind": kind}
            )
            == count
        )
