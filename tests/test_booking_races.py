"""Races on one booking across two `eapctl serve all` replicas on one
PostgreSQL database: two confirmations of one hold, a confirmation and a
cancellation, a reschedule and a cancellation, two reschedules of one
booking. Each round starts both calls at once on different replicas; once
both have answered, nothing may be under way, the booking's state and the
ledger must agree, and the check across services (`eapctl verify`) must
find nothing.

`make test` runs EAP_RACE_ROUNDS rounds of each (default 15);
`EAP_RACE_ROUNDS=200` is the acceptance run (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.cli.consistency import check
from services.matcher.booking.state import UNDER_WAY
from services.office_calendar.shipped import load_shipped
from services.runtime import database
from tests import county, replicas
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUNDS = int(os.environ.get("EAP_RACE_ROUNDS", "15"))
TIMEOUT = 30.0
COUNSELORS = 8
HOURS = (9, 10, 11, 13, 14, 15, 16)
TAIPEI = dt.timezone(dt.timedelta(hours=8))
Stub = "matcher_pb2_grpc.MatcherServiceAsyncStub"


def _office_days(count: int) -> list[dt.date]:
    calendar = load_shipped()
    day = dt.datetime.now(TAIPEI).date() + dt.timedelta(days=7)
    found = []
    while len(found) < count:
        if day.isoweekday() <= 5 and (not calendar.known(day) or calendar.is_office_day(day)):
            found.append(day)
        day += dt.timedelta(days=1)
    return found


class Slots:
    """Hands out (counselor, start) pairs nobody has used yet, so that every
    round's holds succeed and only the race decides: single slots, or a
    whole counselor-day for a round whose slots must share a day."""

    def __init__(self) -> None:
        days = _office_days(15 + ROUNDS * 3 // COUNSELORS)
        self._days = [(f"C{c:02d}", day) for day in days for c in range(COUNSELORS)]
        self._singles: list[tuple[str, dt.datetime]] = []

    def day(self, after: dt.date | None = None) -> list[tuple[str, dt.datetime]]:
        """A counselor-day's slots; with `after`, one in a later ISO week."""
        for n, (counselor, day) in enumerate(self._days):
            if after is None or day.isocalendar()[:2] > after.isocalendar()[:2]:
                del self._days[n]
                return [
                    (counselor, dt.datetime(day.year, day.month, day.day, hour, tzinfo=TAIPEI))
                    for hour in HOURS
                ]
        raise AssertionError("no slot left")

    def take(self) -> tuple[str, dt.datetime]:
        if not self._singles:
            self._singles = self.day()
        return self._singles.pop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with replicas.cluster(tmp_path, ["all"], 2, "eap.matcher.v1.MatcherService") as running:
        yield running


@pytest_asyncio.fixture
async def engine(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    made = database.create_engine(cluster.database_url)
    yield made
    await made.dispose()


async def _answer(call: Awaitable[object]) -> str:
    """OK, or the status code and the rule that refused."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name} {error.details()[:40]}"
    return "OK"


class Race:
    def __init__(self, stubs: list[Stub], slots: Slots) -> None:
        self.stubs = stubs
        self.slots = slots
        self.cases = 0

    async def case(self) -> str:
        self.cases += 1
        case_id = f"K{self.cases:05d}"
        windows = []
        for month in range(6):  # ranges are at most 31 days long
            window = pb.TimeRange()
            # Ranges meet at midnight, where no session is.
            today = dt.datetime.now(TAIPEI).date()
            begin = dt.datetime(today.year, today.month, today.day, tzinfo=TAIPEI)
            begin += dt.timedelta(days=1 + 30 * month)
            window.start.FromDatetime(begin)
            window.end.FromDatetime(begin + dt.timedelta(days=30))
            windows.append(window)
        await self.stubs[0].SubmitCase(
            pb.SubmitCaseRequest(
                case=pb.Case(
                    case_id=case_id,
                    employee_id=f"E{self.cases:05d}",
                    agency_id="PT-HR",
                    staff_category="official",
                    category=pb.CATEGORY_PSYCHOLOGICAL,
                    kind=pb.CASE_KIND_GENERAL,
                    sessions_wanted=3,
                    minutes=60,
                    modalities=[pb.MODALITY_VIDEO],
                    availability=windows,
                    time_off=pb.TIME_OFF_LEAVE,
                )
            ),
            timeout=TIMEOUT,
        )
        return case_id

    async def hold(self, case_id: str, slot: tuple[str, dt.datetime], replaces: str = "") -> str:
        request = pb.HoldSlotRequest(
            case_id=case_id, counselor_id=slot[0], replaces_booking_id=replaces
        )
        request.start.FromDatetime(slot[1])
        held = await self.stubs[1].HoldSlot(request, timeout=TIMEOUT)
        return held.booking.booking_id

    def confirm(self, replica: int, booking_id: str) -> Awaitable[object]:
        return self.stubs[replica].ConfirmBooking(
            pb.ConfirmBookingRequest(booking_id=booking_id), timeout=TIMEOUT
        )

    def cancel(self, replica: int, booking_id: str) -> Awaitable[object]:
        return self.stubs[replica].CancelBooking(
            pb.CancelBookingRequest(booking_id=booking_id, reason="plans changed"),
            timeout=TIMEOUT,
        )

    def reschedule(self, replica: int, booking_id: str, new_id: str) -> Awaitable[object]:
        return self.stubs[replica].RescheduleBooking(
            pb.RescheduleBookingRequest(booking_id=booking_id, new_booking_id=new_id),
            timeout=TIMEOUT,
        )

    async def booked(self) -> tuple[str, str, list[tuple[str, dt.datetime]]]:
        """A booked case, and the rest of its counselor-day's slots."""
        case_id = await self.case()
        first, *rest = self.slots.day()
        booking_id = await self.hold(case_id, first)
        await self.confirm(0, booking_id)
        return case_id, booking_id, rest


async def two_confirms(race: Race) -> tuple[str, str]:
    held = await race.hold(await race.case(), race.slots.take())
    a, b = await asyncio.gather(_answer(race.confirm(0, held)), _answer(race.confirm(1, held)))
    return a, b


async def confirm_and_cancel(race: Race) -> tuple[str, str]:
    held = await race.hold(await race.case(), race.slots.take())
    a, b = await asyncio.gather(_answer(race.confirm(0, held)), _answer(race.cancel(1, held)))
    return a, b


async def reschedule_and_cancel(race: Race) -> tuple[str, str]:
    case_id, booking_id, same_day = await race.booked()
    # Within the week (the same day), where the weekly rule bites hardest.
    new = await race.hold(case_id, same_day[0], replaces=booking_id)
    a, b = await asyncio.gather(
        _answer(race.reschedule(0, booking_id, new)), _answer(race.cancel(1, booking_id))
    )
    return a, b


async def two_reschedules(race: Race) -> tuple[str, str]:
    case_id, booking_id, same_day = await race.booked()
    first = await race.hold(case_id, same_day[0], replaces=booking_id)
    # The first new hold takes the week: the second is in a later one.
    later = race.slots.day(after=same_day[0][1].date())[0]
    second = await race.hold(case_id, later, replaces=booking_id)
    a, b = await asyncio.gather(
        _answer(race.reschedule(0, booking_id, first)),
        _answer(race.reschedule(1, booking_id, second)),
    )
    return a, b


KINDS: dict[str, Callable[[Race], Awaitable[tuple[str, str]]]] = {
    "two confirms": two_confirms,
    "confirm and cancel": confirm_and_cancel,
    "reschedule and cancel": reschedule_and_cancel,
    "two reschedules": two_reschedules,
}


async def _under_way(engine: AsyncEngine) -> list[tuple[str, str]]:
    states = ", ".join(f"'{s.value}'" for s in UNDER_WAY)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT booking_id, state FROM matcher_bookings WHERE state IN ({states})")
        )
        return [(r[0], r[1]) for r in rows]


async def test_races_on_one_booking_leave_bookings_and_ledger_agreeing(
    cluster: Cluster, engine: AsyncEngine
) -> None:
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    try:
        stubs: list[Stub] = [matcher_pb2_grpc.MatcherServiceStub(c) for c in channels]  # type: ignore[misc]
        quota = quota_pb2_grpc.QuotaServiceStub(channels[0])
        year = dt.datetime.now(TAIPEI).year
        for fiscal_year in (year, year + 1):
            await county.seed(  # type: ignore[arg-type]
                quota, budget=10_000_000, cap_minutes=1_000_000, year=fiscal_year
            )
        weekdays = [
            pb.WeeklyWindow(weekday=d, start_time="09:00", end_time="17:00") for d in range(1, 6)
        ]
        for c in range(COUNSELORS):
            await stubs[0].UpsertCounselor(
                pb.UpsertCounselorRequest(
                    counselor=pb.Counselor(
                        counselor_id=f"C{c:02d}",
                        provider_id="P1",
                        display_name=f"Counselor {c}",
                        specialties=[pb.CATEGORY_PSYCHOLOGICAL],
                        modalities=[pb.MODALITY_VIDEO],
                        max_sessions_per_day=len(HOURS),
                        weekly_availability=weekdays,
                    )
                )
            )
        race = Race(stubs, Slots())
        outcomes: dict[str, Counter[tuple[str, str]]] = {kind: Counter() for kind in KINDS}
        for n in range(ROUNDS):
            for kind, run in KINDS.items():
                answers = await run(race)
                outcomes[kind][answers] += 1
                for answer in answers:
                    assert "INTERNAL" not in answer and "UNKNOWN" not in answer, (kind, answers)
                # Both calls have answered: nothing is left half done.
                assert await _under_way(engine) == [], (kind, n, answers)
                problems = await check(engine, engine)
                assert problems == [], (kind, n, answers, [str(p) for p in problems])
        print({kind: dict(counts) for kind, counts in outcomes.items()})
    finally:
        for channel in channels:
            await channel.close()
