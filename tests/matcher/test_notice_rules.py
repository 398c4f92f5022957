"""Notice rules and no-shows over gRPC (issue 16, item 1 and acceptance 1):
a cancellation inside the tenant's notice period and a recorded no-show
are charged as its booking policy says, in the ledger and the aggregates;
one in good time is not; a counselor's own cancellation never is."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from tests.access import Secured
from tests.conftest import MONDAY, Backend, Suite, during
from tests.county import RATE, YEAR
from tests.matcher.test_booking import _consistent, agency, book, case, local, slots, submit
from tests.quota.test_rpcs import details, refused

NEXT_MONDAY = MONDAY + dt.timedelta(weeks=1)


async def policy(suite: Suite, **fields: object) -> pb.BookingPolicy:
    values: dict[str, object] = {
        "notice_hours": 24,
        "late_cancellation_charge": pb.CHARGE_FULL,
        "no_show_charge": pb.CHARGE_FULL,
        "use_default_reminders": True,
        **fields,
    }
    message = pb.BookingPolicy(**values)  # type: ignore[arg-type]
    request = pb.SetBookingPolicyRequest(policy=message)
    return (await suite.matcher.SetBookingPolicy(request)).policy


async def booked_on(suite: Suite, day: dt.date, case_id: str = "K1") -> pb.Booking:
    found = [s for s in await slots(suite, case_id) if local(s.start).date() == day]
    return await book(suite, found[0], case_id)


async def cancel(suite: Suite, booking: pb.Booking, **fields: object) -> pb.Booking:
    request = pb.CancelBookingRequest(booking_id=booking.booking_id, **fields)  # type: ignore[arg-type]
    return (await suite.matcher.CancelBooking(request)).booking


async def reasons(suite: Suite) -> list[str]:
    """The reasons of the agency account's ledger entries, in order."""
    account = qpb.AccountRef(kind=qpb.ACCOUNT_KIND_AGENCY, id="PT-HR", fiscal_year=YEAR)
    request = qpb.ListLedgerRequest(account=account, page_size=1000)
    return [e.reason for e in (await suite.quota.ListLedger(request)).entries]


async def test_the_policy_has_defaults_and_is_checked(suite: Suite) -> None:
    got = (await suite.matcher.GetBookingPolicy(pb.GetBookingPolicyRequest())).policy
    assert (got.notice_hours, got.late_cancellation_charge, got.no_show_charge) == (
        24,
        pb.CHARGE_NONE,
        pb.CHARGE_NONE,
    )
    assert got.use_default_reminders and list(got.reminder_hours) == []
    error = await refused(
        suite.matcher.SetBookingPolicy(
            pb.SetBookingPolicyRequest(
                policy=pb.BookingPolicy(notice_hours=400, reminder_hours=[0, 500])
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(error)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {
        "notice_hours",
        "late_cancellation_charge",
        "no_show_charge",
        "reminder_hours",
    }
    set_ = await policy(suite, notice_hours=48, reminder_hours=[2, 24], use_default_reminders=False)
    assert (set_.notice_hours, list(set_.reminder_hours)) == (48, [24.0, 2.0])
    got = (await suite.matcher.GetBookingPolicy(pb.GetBookingPolicyRequest())).policy
    assert got == set_


@pytest.mark.parametrize(
    ("charge", "spent", "week_free"),
    [
        (pb.CHARGE_FULL, RATE, False),
        (pb.CHARGE_ENTITLEMENT_COUNTED, 0, False),
        (pb.CHARGE_NONE, 0, True),
    ],
)
async def test_a_late_cancellation_is_charged_as_the_policy_says(
    suite: Suite, backend: Backend, charge: int, spent: int, week_free: bool
) -> None:
    await policy(suite, late_cancellation_charge=charge)
    await submit(suite, case())
    booking = await booked_on(suite, MONDAY)
    with during(booking.start, minutes=-120):  # two hours before: late
        cancelled = await cancel(suite, booking, reason="something came up")
    assert cancelled.state == pb.BOOKING_STATE_CANCELLED
    assert cancelled.attendance == pb.ATTENDANCE_LATE_CANCELLATION
    assert (await agency(suite)).spent == spent
    assert (await reasons(suite))[-1] == "LATE_CANCELLATION"
    # Charged in any way, the session keeps its week; charged nothing, not.
    this_week = [s for s in await slots(suite) if local(s.start).date() < NEXT_MONDAY]
    assert bool(this_week) == week_free
    assert await _consistent(backend) == []


async def test_a_cancellation_in_good_time_is_not_charged(suite: Suite, backend: Backend) -> None:
    await submit(suite, case())
    booking = await booked_on(suite, NEXT_MONDAY)
    cancelled = await cancel(suite, booking)  # a week ahead
    assert cancelled.attendance == pb.ATTENDANCE_UNSPECIFIED
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)
    assert (await reasons(suite))[-1] == "BOOKING_CANCELLED"
    # A longer notice period makes the same cancellation late.
    await policy(suite, notice_hours=24 * 8)
    again = await booked_on(suite, NEXT_MONDAY)
    assert (await cancel(suite, again)).attendance == pb.ATTENDANCE_LATE_CANCELLATION
    assert (await agency(suite)).spent == RATE
    assert await _consistent(backend) == []


async def test_a_counselors_cancellation_is_never_charged(suite: Suite, backend: Backend) -> None:
    await policy(suite, late_cancellation_charge=pb.CHARGE_FULL)
    await submit(suite, case())
    booking = await booked_on(suite, MONDAY)
    with during(booking.start, minutes=-30):  # the counselor falls ill that morning
        cancelled = await cancel(suite, booking, cancelled_by=pb.CANCELLED_BY_COUNSELOR)
    assert cancelled.attendance == pb.ATTENDANCE_COUNSELOR_CANCELLED
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)
    assert (await reasons(suite))[-1] == "COUNSELOR_CANCELLED"
    assert await _consistent(backend) == []


@pytest.mark.parametrize(
    ("charge", "spent"),
    [(pb.CHARGE_FULL, RATE), (pb.CHARGE_PROVIDER_PAID, RATE), (pb.CHARGE_NONE, 0)],
)
async def test_a_no_show_is_charged_as_the_policy_says(
    suite: Suite, backend: Backend, charge: int, spent: int
) -> None:
    await policy(suite, no_show_charge=charge)
    await submit(suite, case())
    booking = await booked_on(suite, MONDAY)
    request = pb.CompleteSessionRequest(
        booking_id=booking.booking_id, outcome=pb.ATTENDANCE_NO_SHOW
    )
    with during(booking.start, minutes=15):
        bad = await refused(
            suite.matcher.CompleteSession(
                pb.CompleteSessionRequest(
                    booking_id=booking.booking_id, outcome=pb.ATTENDANCE_NO_SHOW, minutes=30
                )
            )
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        done = (await suite.matcher.CompleteSession(request)).booking
        again = (await suite.matcher.CompleteSession(request)).booking
    assert (done.state, done.attendance) == (pb.BOOKING_STATE_COMPLETED, pb.ATTENDANCE_NO_SHOW)
    assert again == done
    assert (await agency(suite)).spent == spent
    assert (await reasons(suite))[-1] == "NO_SHOW"
    assert await _consistent(backend) == []


async def test_missed_sessions_are_counted_in_the_usage_summary(suite: Suite) -> None:
    """Six officials in one week (enough people for the cell to be shown):
    two no-shows, one late cancellation, three sessions that took place."""
    await policy(suite, no_show_charge=pb.CHARGE_FULL, late_cancellation_charge=pb.CHARGE_FULL)
    bookings = []
    for n in range(1, 7):
        await submit(suite, case(f"K{n}", f"E{n}"))
        bookings.append(await booked_on(suite, MONDAY, f"K{n}"))
    with during(bookings[0].start, minutes=-60):
        await cancel(suite, bookings[0])
    for booking in bookings[1:]:
        outcome = pb.ATTENDANCE_NO_SHOW if booking in bookings[1:3] else pb.ATTENDANCE_ATTENDED
        with during(booking.start, minutes=70):
            await suite.matcher.CompleteSession(
                pb.CompleteSessionRequest(booking_id=booking.booking_id, outcome=outcome)
            )
    summary = await suite.quota.GetUsageSummary(qpb.GetUsageSummaryRequest(fiscal_year=YEAR))
    (row,) = [r for r in summary.rows if r.staff_category == "official"]
    assert (row.people, row.sessions, row.no_shows, row.late_cancellations) == (6, 3, 2, 1)
    assert row.amount_ntd == 6 * RATE  # the policy charges each in full


async def test_an_employee_cannot_pass_a_cancellation_off_as_the_counselors(
    secured_suite: Secured,
) -> None:
    suite = secured_suite
    error = await refused(
        suite.matcher.CancelBooking(
            pb.CancelBookingRequest(booking_id="B1", cancelled_by=pb.CANCELLED_BY_COUNSELOR),
            metadata=suite.as_("employee", "E1"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["cancelled_by"]
    # Only administrators set the policy; those it binds may read it.
    denied = await refused(
        suite.matcher.SetBookingPolicy(
            pb.SetBookingPolicyRequest(policy=pb.BookingPolicy(notice_hours=1)),
            metadata=suite.as_("employee", "E1"),
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    read = await suite.matcher.GetBookingPolicy(
        pb.GetBookingPolicyRequest(), metadata=suite.as_("counselor", "C001")
    )
    assert read.policy.notice_hours == 24


async def reschedule_to(suite: Suite, booking: pb.Booking, slot: pb.Slot) -> object:
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(
            case_id=booking.case_id,
            counselor_id=slot.counselor_id,
            start=slot.start,
            replaces_booking_id=booking.booking_id,
        )
    )
    return suite.matcher.RescheduleBooking(
        pb.RescheduleBookingRequest(
            booking_id=booking.booking_id, new_booking_id=held.booking.booking_id
        )
    )


async def test_moving_late_is_no_way_around_the_policy(suite: Suite, backend: Backend) -> None:
    await policy(suite, late_cancellation_charge=pb.CHARGE_FULL)
    await submit(suite, case())
    found = await slots(suite)
    booking = await booked_on(suite, MONDAY)  # this morning: inside the notice period
    # Within the week: the late cancellation keeps the week, so the move is refused.
    same_week = next(
        s for s in found if local(s.start).date() == MONDAY and local(s.start).hour == 14
    )
    error = await refused(await reschedule_to(suite, booking, same_week))  # type: ignore[arg-type]
    assert details(error)["ErrorInfo"].reason == "WEEKLY_LIMIT"  # type: ignore[attr-defined]
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert [b.state for b in got.bookings] == [pb.BOOKING_STATE_BOOKED]  # it stands
    assert (await agency(suite)).spent == RATE
    # To next week: the new session is booked, the old one charged as cancelled late.
    next_week = next(s for s in found if local(s.start).date() == NEXT_MONDAY)
    moved = await (await reschedule_to(suite, booking, next_week))  # type: ignore[misc]
    assert moved.booking.state == pb.BOOKING_STATE_BOOKED
    assert moved.previous.attendance == pb.ATTENDANCE_LATE_CANCELLATION
    assert (await agency(suite)).spent == 2 * RATE
    assert await _consistent(backend) == []
