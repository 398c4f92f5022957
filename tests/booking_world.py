"""What the booking tests across `eapctl serve all` replicas share: a county
seeded with money enough never to refuse, counselors with every weekday
free, slots nobody has used yet, and the booking calls a client makes.

tests/matcher/test_booking_races.py fires fixed races on one booking;
tests/matcher/test_booking_stateful.py lets Hypothesis choose the steps and races.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from pathlib import Path
from typing import TypeAlias, TypeVar

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.matcher.booking.state import UNDER_WAY
from services.office_calendar.shipped import load_shipped
from services.runtime import clock
from tests import county

R = TypeVar("R")
# The async stub exists only for the type checker.
Stub: TypeAlias = "matcher_pb2_grpc.MatcherServiceAsyncStub"
Slot = tuple[str, dt.datetime]  # (counselor, start)
Week = tuple[int, int]  # ISO (year, week), as date.isocalendar()[:2]

TIMEOUT = 30.0
COUNSELORS = 8
HOURS = (9, 10, 11, 13, 14, 15, 16)
TAIPEI = dt.timezone(dt.timedelta(hours=8))


def office_days(count: int) -> list[dt.date]:
    """The first `count` office days from a week ahead: far enough that no
    slot is in the past while a test runs."""
    calendar = load_shipped()
    day = dt.datetime.now(TAIPEI).date() + dt.timedelta(days=7)
    found: list[dt.date] = []
    while len(found) < count:
        if day.isoweekday() <= 5 and (not calendar.known(day) or calendar.is_office_day(day)):
            found.append(day)
        day += dt.timedelta(days=1)
    return found


class ReplicaClock:
    """The clock of replicas started with EAP_DEV_CLOCK_FILE=`path`: moved
    to a session's start to complete it, then back to the real time, so
    that the slots still to come stay in the future."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("0")

    async def _set(self, ahead: dt.timedelta) -> None:
        fresh = self.path.with_suffix(".new")
        fresh.write_text(str(max(ahead, dt.timedelta()).total_seconds()))
        fresh.replace(self.path)  # a replica reads it whole or not at all
        await asyncio.sleep(clock.FOLLOW_SECONDS * 3)  # every replica has read it

    @contextlib.asynccontextmanager
    async def past(self, moment: dt.datetime) -> AsyncIterator[None]:
        """The replicas' clock a minute past `moment` for the block."""
        await self._set(moment + dt.timedelta(minutes=1) - dt.datetime.now(TAIPEI))
        try:
            yield
        finally:
            await self._set(dt.timedelta())


def week_of(slot: Slot) -> Week:
    year, week, _ = slot[1].date().isocalendar()
    return (year, week)


class Slots:
    """Hands out (counselor, start) pairs nobody has used yet, so that every
    hold succeeds and only the race decides: single slots, or a whole
    counselor-day for a round whose slots must share a day. Counselor-days
    are taken whole, so no counselor's daily maximum ever refuses one."""

    def __init__(self, days: int) -> None:
        self._days = [(f"C{c:02d}", day) for day in office_days(days) for c in range(COUNSELORS)]
        self._singles: list[Slot] = []

    def _open(self, n: int) -> list[Slot]:
        counselor, day = self._days.pop(n)
        return [
            (counselor, dt.datetime(day.year, day.month, day.day, hour, tzinfo=TAIPEI))
            for hour in HOURS
        ]

    def day(self, after: dt.date | None = None) -> list[Slot]:
        """A counselor-day's slots; with `after`, one in a later ISO week."""
        for n, (_, day) in enumerate(self._days):
            if after is None or day.isocalendar()[:2] > after.isocalendar()[:2]:
                return self._open(n)
        raise AssertionError("no slot left")

    def take(self) -> Slot:
        if not self._singles:
            self._singles = self.day()
        return self._singles.pop()

    def take_outside(self, busy: Collection[Week], prefer: Week | None = None) -> Slot:
        """A slot in an ISO week not in `busy` (an employee has one session
        a week at most), in week `prefer` while one is left there."""

        def fits(week: Week, wanted: Week | None) -> bool:
            return week not in busy and wanted in (None, week)

        for wanted in [prefer, None] if prefer is not None else [None]:
            for n, slot in enumerate(self._singles):
                if fits(week_of(slot), wanted):
                    return self._singles.pop(n)
            for n, (_, day) in enumerate(self._days):
                if fits(day.isocalendar()[:2], wanted):
                    self._singles.extend(self._open(n))
                    return self._singles.pop()
        raise AssertionError("no slot left")


async def reply(call: Awaitable[R]) -> tuple[str, R | None]:
    """("OK", the response), or (the status code and the rule that refused, None)."""
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name} {(error.details() or '')[:40]}", None
    return "OK", response


async def answer(call: Awaitable[object]) -> str:
    """OK, or the status code and the rule that refused."""
    return (await reply(call))[0]


async def open_county(stubs: Sequence[Stub], quota: quota_pb2_grpc.QuotaServiceAsyncStub) -> None:
    """The county with budgets and contracts large enough that the quota
    never refuses, for this fiscal year and the next (the slots run into
    it), and COUNSELORS counselors of provider P1 free every weekday."""
    year = dt.datetime.now(TAIPEI).year
    for fiscal_year in (year, year + 1):
        await county.seed(quota, budget=10_000_000, cap_minutes=1_000_000, year=fiscal_year)
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
            ),
            timeout=TIMEOUT,
        )


class Race:
    """A client of the replicas: cases, holds, and the calls on a booking,
    each sent to the replica named by its index in `stubs`."""

    def __init__(self, stubs: Sequence[Stub], slots: Slots) -> None:
        self.stubs = stubs
        self.slots = slots
        self.cases = 0

    async def case(self, sessions_wanted: int = 3) -> str:
        """A new case of a new employee, available for the next six months."""
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
        await county.enrol(self.stubs[0], [f"E{self.cases:05d}"])
        await self.stubs[0].SubmitCase(
            pb.SubmitCaseRequest(
                case=pb.Case(
                    case_id=case_id,
                    employee_id=f"E{self.cases:05d}",
                    agency_id="PT-HR",
                    staff_category="official",
                    category=pb.CATEGORY_PSYCHOLOGICAL,
                    kind=pb.CASE_KIND_GENERAL,
                    sessions_wanted=sessions_wanted,
                    minutes=60,
                    modalities=[pb.MODALITY_VIDEO],
                    availability=windows,
                    time_off=pb.TIME_OFF_LEAVE,
                )
            ),
            timeout=TIMEOUT,
        )
        return case_id

    def hold_call(
        self, replica: int, case_id: str, slot: Slot, replaces: str = ""
    ) -> Awaitable[pb.HoldSlotResponse]:
        request = pb.HoldSlotRequest(
            case_id=case_id, counselor_id=slot[0], replaces_booking_id=replaces
        )
        request.start.FromDatetime(slot[1])
        return self.stubs[replica].HoldSlot(request, timeout=TIMEOUT)

    async def hold(self, case_id: str, slot: Slot, replaces: str = "", replica: int = 1) -> str:
        held = await self.hold_call(replica, case_id, slot, replaces)
        return held.booking.booking_id

    def confirm(self, replica: int, booking_id: str) -> Awaitable[pb.ConfirmBookingResponse]:
        return self.stubs[replica].ConfirmBooking(
            pb.ConfirmBookingRequest(booking_id=booking_id), timeout=TIMEOUT
        )

    def cancel(self, replica: int, booking_id: str) -> Awaitable[pb.CancelBookingResponse]:
        return self.stubs[replica].CancelBooking(
            pb.CancelBookingRequest(booking_id=booking_id, reason="plans changed"),
            timeout=TIMEOUT,
        )

    def reschedule(
        self, replica: int, booking_id: str, new_id: str
    ) -> Awaitable[pb.RescheduleBookingResponse]:
        return self.stubs[replica].RescheduleBooking(
            pb.RescheduleBookingRequest(booking_id=booking_id, new_booking_id=new_id),
            timeout=TIMEOUT,
        )

    def complete(self, replica: int, booking_id: str) -> Awaitable[pb.CompleteSessionResponse]:
        """The session took place, as long as booked (minutes 0)."""
        return self.stubs[replica].CompleteSession(
            pb.CompleteSessionRequest(booking_id=booking_id), timeout=TIMEOUT
        )

    async def booked(self) -> tuple[str, str, list[Slot]]:
        """A booked case, and the rest of its counselor-day's slots."""
        case_id = await self.case()
        first, *rest = self.slots.day()
        booking_id = await self.hold(case_id, first)
        await self.confirm(0, booking_id)
        return case_id, booking_id, rest


async def under_way(engine: AsyncEngine) -> list[tuple[str, str]]:
    """Bookings with a step under way: (booking id, state)."""
    states = ", ".join(f"'{s.value}'" for s in UNDER_WAY)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT booking_id, state FROM matcher_bookings WHERE state IN ({states})")
        )
        return [(r[0], r[1]) for r in rows]
