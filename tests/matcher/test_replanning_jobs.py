"""Re-planning a county without upheaval, over gRPC: 400 cases are booked,
60 more arrive, ten of them crisis cases who can come only on days the
booked sessions fill. Bookings fixed, the crisis cases go unserved; movable
at a cost, the job moves just enough booked sessions within their weeks,
lists each move with its reason, never touches one inside the notice
period, and applying it (each move the booking's own reschedule) leaves
`eapctl verify` clean.

The clock is at Monday 8 March 2027, 08:00: Monday's sessions are inside
the 24-hour notice period, Tuesday's are not; a crisis case in now must be
seen before Thursday 08:00."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.orm import BookingRow
from services.runtime import database
from tests.conftest import MONDAY, Backend, Suite, at
from tests.county import YEAR, counselor, enrol
from tests.matcher.test_booking import _consistent, case, eapctl_verify, local, span, submit

COUNSELORS = [f"C1{n:02d}" for n in range(10)]
HOURS = range(9, 17)  # a session starting each hour, 09:00 to 16:00
WEEKDAYS = [pb.WeeklyWindow(weekday=d, start_time="09:00", end_time="17:00") for d in range(1, 6)]
NEXT_MONDAY = MONDAY + dt.timedelta(weeks=1)


def days(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=k) for k in range(n)]


def whole_week(monday: dt.date) -> list[pb.TimeRange]:
    return [span(day, 9, 17) for day in days(monday, 5)]


async def county(suite: Suite) -> dict[str, tuple[str, dt.date]]:
    """Ten counselors, full-time; 400 booked cases filling week one's
    Monday to Wednesday and week two's Monday and Tuesday. Returns each
    booking's counselor and day, by booking id."""
    for provider in ("P1", "P2"):
        await suite.quota.SetProviderContract(
            qpb.SetProviderContractRequest(
                provider_id=provider,
                fiscal_year=YEAR,
                hourly_rate_ntd=2000,
                cap_minutes=60_000,
                reason="a full county's contract",
            )
        )
    for agency in ("PT-HR", "PT-EDU"):
        await suite.quota.TopUpBudget(
            qpb.TopUpBudgetRequest(
                idempotency_key=f"replan-{agency}",
                agency_id=agency,
                fiscal_year=YEAR,
                amount_ntd=2_000_000,
                reason="a full county's budget",
            )
        )
    await enrol(suite.matcher, [f"E{n}" for n in range(1000, 1460)])
    for n, counselor_id in enumerate(COUNSELORS):
        await suite.matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(
                counselor=counselor(
                    counselor_id,
                    provider="P1" if n % 2 else "P2",
                    max_sessions_per_day=8,
                    weekly_availability=WEEKDAYS,
                )
            )
        )
    places = [
        (day, hour, k)
        for day in days(MONDAY, 3) + days(NEXT_MONDAY, 2)
        for hour in HOURS
        for k in COUNSELORS
    ]
    assert len(places) == 400
    booked: dict[str, tuple[str, dt.date]] = {}

    async def book(n: int, day: dt.date, hour: int, k: str) -> None:
        monday = MONDAY if day < NEXT_MONDAY else NEXT_MONDAY
        case_id = f"B{n:03d}"
        await submit(
            suite,
            case(case_id, f"E{1000 + n}", sessions_wanted=1, availability=whole_week(monday)),
        )
        held = await suite.matcher.HoldSlot(
            pb.HoldSlotRequest(case_id=case_id, counselor_id=k, start=at(day, hour))
        )
        done = await suite.matcher.ConfirmBooking(
            pb.ConfirmBookingRequest(booking_id=held.booking.booking_id)
        )
        booked[done.booking.booking_id] = (k, day)

    # A counselor's slots one after another (their row is locked while a
    # slot is held), the counselors side by side.
    async def fill(k: str) -> None:
        for n, (day, hour, owner) in enumerate(places):
            if owner == k:
                await book(n, day, hour, k)

    await asyncio.gather(*(fill(k) for k in COUNSELORS))
    # 60 arrive: ten crisis cases free on Tuesday and Wednesday only, fifty
    # wanting two sessions over the fortnight.
    for n in range(10):
        await submit(
            suite,
            case(
                f"N-CRISIS-{n}",
                f"E{1400 + n}",
                kind=pb.CASE_KIND_CRISIS,
                sessions_wanted=1,
                availability=[span(day, 9, 17) for day in days(MONDAY + dt.timedelta(days=1), 2)],
            ),
        )
    for n in range(50):
        await submit(
            suite,
            case(
                f"N{n:02d}",
                f"E{1410 + n}",
                sessions_wanted=2,
                availability=whole_week(MONDAY) + whole_week(NEXT_MONDAY),
            ),
        )
    return booked


async def run(suite: Suite, seconds: int, **fields: object) -> pb.GetMatchResultResponse:
    request = pb.SubmitMatchJobRequest(
        horizon_start=at(MONDAY, 0), weeks=2, time_limit_seconds=seconds, **fields
    )
    job = (await suite.matcher.SubmitMatchJob(request)).job
    async for update in suite.matcher.WatchMatchJob(pb.WatchMatchJobRequest(job_id=job.job_id)):
        last = update.job
    assert last.state == pb.MATCH_JOB_STATE_DONE, last.error
    return await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))


async def test_a_county_is_replanned_with_a_few_listed_moves(
    suite: Suite, backend: Backend
) -> None:
    booked = await county(suite)
    crisis = {f"N-CRISIS-{n}" for n in range(10)}

    fixed = await run(suite, 4, existing_bookings=pb.EXISTING_BOOKINGS_FIXED)
    assert not fixed.moves
    # The booked sessions' time is not offered at all: nothing is free for them.
    assert {(u.case_id, u.reason) for u in fixed.unserved if u.case_id in crisis} == {
        (c, "NO_COMMON_AVAILABILITY") for c in crisis
    }

    result = await run(suite, 10, existing_bookings=pb.EXISTING_BOOKINGS_MOVABLE, move_cost=50)
    served = {s.case_id for s in result.sessions}
    assert crisis <= served, sorted(crisis - served)
    assert result.moves and len(result.moves) < 40  # a few, not a reshuffle
    seen_before_thursday = dt.datetime(2027, 3, 11, 8, tzinfo=local(at(MONDAY, 0)).tzinfo)
    assert all(
        local(s.start) < seen_before_thursday for s in result.sessions if s.case_id in crisis
    )
    for move in result.moves:
        source, target = getattr(move, "from"), move.to
        counselor_id, day = booked[move.booking_id]
        assert (source.counselor_id, local(source.start).date()) == (counselor_id, day)
        assert day != MONDAY  # inside the notice period: fixed
        assert local(source.start).isocalendar()[:2] == local(target.start).isocalendar()[:2]
        assert (target.counselor_id, target.start) != (source.counselor_id, source.start)
        assert move.reason and move.explanation
        if move.reason == "ROOM_FOR_CRISIS":
            assert move.for_case_id in crisis
    assert {m.for_case_id for m in result.moves if m.reason == "ROOM_FOR_CRISIS"} == crisis

    applied = await suite.matcher.ApplyMatchResult(
        pb.ApplyMatchResultRequest(job_id=result.job.job_id)
    )
    assert len(applied.moved) == len(result.moves) and not applied.not_moved
    assert len(applied.booked) == len(result.sessions) and not applied.not_booked
    # Every booked case still has its one session, where the job said.
    engine = database.create_engine(backend.settings.database_url_for("matcher"))
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(BookingRow).where(BookingRow.state == "booked"))
            ).all()
    finally:
        await engine.dispose()
    live = {row.case_id: (row.counselor_id, row.start) for row in rows}
    assert {f"B{n:03d}" for n in range(400)} <= set(live)
    for move in result.moves:
        assert live[move.case_id] == (move.to.counselor_id, move.to.start.ToDatetime(dt.UTC))
    assert await _consistent(backend) == []
    returncode, out, err = await eapctl_verify(backend)
    assert returncode == 0, out + err
