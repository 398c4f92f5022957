"""A match job's snapshot: the work as it stands (open cases, the
counselors' free time on office days, the quota left), in the benchmark's
instance format, for `eapctl match solve` to plan.

The horizon's bookings are fixed by default: the time, weeks and quota they
hold are simply not offered. With `Existing.MOVABLE`, a booked session that
starts after the tenant's notice period (moving one sooner would be a late
cancellation to the person holding it) and is a case's own individual session
is offered instead as the instance's `booked` (booked.py): its time stays in
both availabilities, its hours and cost are given back to the caps, budgets
and entitlement it draws on, and each move costs `move_cost` score points.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.booking import slots, tenant_policy
from services.matcher.booking.cases import Case
from services.matcher.booking.state import BookingState
from services.matcher.booking.store import case_of, live
from services.matcher.calendar_port import CalendarPort
from services.matcher.optimization.instance import (
    INSTANCE_FORMAT,
    SEED_RULES,
    SEED_WEIGHTS,
    TIME_FORMAT,
)
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.counselors import Counselor
from services.matcher.registry.store import counselor_of
from services.rules.cost import session_cost_ntd
from services.rules.office_time import OFFICE_ZONE, OFFICE_ZONE_NAME, iso_week, local_day
from services.rules.sessions import SLOT_MINUTES
from services.runtime import clock
from services.runtime.errors import NotFound

# What moving one booked session costs, in score points, unless the job
# says: half a session's worth, so a move must buy more than a wait or a
# cheaper rate, such as another session or a crisis case seen in time.
DEFAULT_MOVE_COST = 50.0


class Existing(StrEnum):
    FIXED = "fixed"  # the horizon's bookings stay as they are
    MOVABLE = "movable"  # those past the notice period may move, at a cost per move


@dataclass(frozen=True)
class JobRequest:
    horizon_start: datetime
    weeks: int
    case_ids: Sequence[str]
    time_limit_seconds: int
    weights: dict[str, float]
    what_if: dict[str, int]  # agency id -> extra NT$
    existing: Existing = Existing.FIXED
    move_cost: float = DEFAULT_MOVE_COST


Range = tuple[datetime, datetime]


def _merged(ranges: list[Range]) -> list[Range]:
    """Overlapping or touching ranges as one: free time that runs on."""
    out: list[Range] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def local_text(moment: datetime) -> str:
    return moment.astimezone(OFFICE_ZONE).strftime(TIME_FORMAT)


def monday_of(moment: datetime) -> datetime:
    day = local_day(moment)
    monday = day - timedelta(days=day.weekday())
    return datetime.combine(monday, datetime.min.time(), OFFICE_ZONE)


class Snapshots:
    """Builds a job's instance from the live registry, cases and quota."""

    def __init__(
        self, engine: AsyncEngine, quota: QuotaPort, calendars: CalendarPort, deadline_hours: int
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._quota = quota
        self._calendars = calendars
        self._deadline_hours = deadline_hours

    async def build(self, request: JobRequest) -> dict[str, Any]:
        start = monday_of(request.horizon_start)
        end = start + timedelta(weeks=request.weeks)
        year = start.year
        now = clock.now()
        async with self._sessions() as session:
            query = select(CaseRow).order_by(CaseRow.case_id)
            if request.case_ids:
                query = query.where(CaseRow.case_id.in_(list(request.case_ids)))
            cases = [case_of(row) for row in await session.scalars(query)]
            missing = set(request.case_ids) - {c.case_id for c in cases}
            if missing:
                raise NotFound(f"{len(missing)} of case_ids name no case")
            cases = [c for c in cases if c.withdrawn_at is None]  # no longer matched
            counselors = [
                counselor_of(row)
                for row in await session.scalars(select(CounselorRow).order_by("counselor_id"))
            ]
            booked = list(
                await session.scalars(
                    select(BookingRow).where(
                        live(now),
                        or_(
                            and_(BookingRow.start < end, BookingRow.end > start),
                            BookingRow.case_id.in_([c.case_id for c in cases]),
                        ),
                    )
                )
            )
            policy = await tenant_policy.load(session)
        counselor_by_id = {k.counselor_id: k for k in counselors}
        movable = (
            self._movable(booked, cases, counselor_by_id, start, end, now, policy.notice_hours)
            if request.existing is Existing.MOVABLE
            else []
        )
        moving = {b.booking_id for b in movable}
        fixed = [b for b in booked if b.booking_id not in moving]
        per_case = Counter(b.case_id for b in fixed)
        employee_weeks = {(b.employee_id, iso_week(b.start)) for b in fixed}
        busy: dict[str, list[Range]] = {}
        for b in fixed:
            busy.setdefault(b.counselor_id, []).append((b.start, b.end))
        # What the movable sessions hold of the quota, given back: the
        # quota's balances count them as spent.
        back_minutes: Counter[str] = Counter()  # by provider and by employee
        back_ntd: Counter[str] = Counter()  # by agency
        case_by_id = {c.case_id: c for c in cases}

        providers: list[dict[str, Any]] = []
        contracted = set()
        rates: dict[str, int] = {}
        for provider_id in sorted({k.provider_id for k in counselors}):
            contract = await self._quota.contract(provider_id, year)
            if contract is None:
                continue  # no contract this year: its counselors cannot be booked
            rates[provider_id], left_minutes = contract
            contracted.add(provider_id)
            providers.append({"id": provider_id, "hourly_rate_ntd": rates[provider_id]})
            providers[-1]["left_minutes"] = left_minutes
        movable = [b for b in movable if b.provider_id in contracted]
        for b in movable:
            back_minutes[b.provider_id] += b.minutes
            back_minutes[b.employee_id] += b.minutes
            back_ntd[case_by_id[b.case_id].agency_id] += session_cost_ntd(
                rates[b.provider_id], b.minutes
            )
        for item in providers:
            item["hours_cap"] = (item.pop("left_minutes") + back_minutes[item["id"]]) / 60
        moved_time: dict[str, list[Range]] = {}
        for b in movable:
            moved_time.setdefault(b.counselor_id, []).append((b.start, b.end))
        counselor_items = []
        for k in counselors:
            if k.provider_id not in contracted:
                continue
            first, last = local_day(start), local_day(end - timedelta(days=1))
            windows = slots.counselor_windows(k, first, last, self._calendars.current)
            free = slots.without(windows, busy.get(k.counselor_id, []))
            free = _merged(free + moved_time.get(k.counselor_id, []))
            counselor_items.append(
                {
                    "id": k.counselor_id,
                    "provider": k.provider_id,
                    "specialties": [s.value for s in k.specialties],
                    "modalities": [m.value for m in k.modalities],
                    "max_sessions_per_day": k.max_sessions_per_day,
                    "availability": [[local_text(a), local_text(b)] for a, b in free if a < b],
                }
            )

        bookable = {str(item["id"]) for item in counselor_items}
        own_moves: dict[str, list[Range]] = {}
        for b in movable:
            own_moves.setdefault(b.case_id, []).append((b.start, b.end))
        entitlement: dict[str, float] = {}
        case_items = []
        for case in cases:
            wanted = case.sessions_wanted - per_case[case.case_id]
            if wanted <= 0:
                continue
            if case.employee_id not in entitlement:
                left = await self._quota.left(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)
                # An account not opened yet gets its policy's entitlement on
                # the first booking; the quota service checks it then.
                entitlement[case.employee_id] = (
                    (left + back_minutes[case.employee_id]) / 60
                    if left is not None
                    else case.sessions_wanted * case.minutes / 60
                )
            ranges: list[Range] = []
            for r in case.availability:
                lo, hi = max(r.start, start), min(r.end, end)
                if lo < hi and (case.employee_id, iso_week(lo)) not in employee_weeks:
                    ranges.append((lo, hi))
            merged = _merged(ranges + own_moves.get(case.case_id, []))
            case_items.append(
                _case_item(
                    case,
                    wanted,
                    [[local_text(lo), local_text(hi)] for lo, hi in merged],
                    entitlement[case.employee_id],
                    bookable,
                )
            )

        agencies = []
        for agency_id in sorted({c.agency_id for c in cases}):
            left = await self._quota.left(qpb.ACCOUNT_KIND_AGENCY, agency_id, year)
            budget = max(left or 0, 0) + back_ntd[agency_id]
            agencies.append({"id": agency_id, "budget_ntd": budget})
        return {
            "format": INSTANCE_FORMAT,
            "name": f"match-{local_text(start)[:10]}-w{request.weeks}",
            "timezone": OFFICE_ZONE_NAME,
            "horizon": {"start": local_text(start)[:10], "weeks": request.weeks},
            "slot_minutes": SLOT_MINUTES,
            "rules": {**SEED_RULES, "crisis_deadline_hours": self._deadline_hours},
            "weights": {**SEED_WEIGHTS, **request.weights}
            | ({"move": request.move_cost} if movable else {}),
            "providers": providers,
            "counselors": counselor_items,
            "agencies": agencies,
            "cases": case_items,
        } | ({"booked": [_booked_item(b) for b in movable]} if movable else {})

    @staticmethod
    def _movable(
        booked: list[BookingRow],
        cases: list[Case],
        counselors: dict[str, Counselor],
        start: datetime,
        end: datetime,
        now: datetime,
        notice_hours: int,
    ) -> list[BookingRow]:
        """The bookings a re-plan may move: booked (not held, being moved or
        completed), inside the horizon, past the notice period, a case's
        own session (a group's is the group's) of the case's length, with a
        counselor still registered."""
        by_id = {c.case_id: c for c in cases}
        after = now + timedelta(hours=notice_hours)
        return [
            b
            for b in booked
            if b.state == BookingState.BOOKED.value
            and start <= b.start
            and b.end <= end
            and b.start >= after
            and not b.group_id
            and (case := by_id.get(b.case_id)) is not None
            and case.minutes == b.minutes
            and (counselor := counselors.get(b.counselor_id)) is not None
            and case.can_see(counselor)  # still, for keeping it to be allowed
            and b.modality in case.modalities
            and b.modality in counselor.modalities
        ]


def _booked_item(b: BookingRow) -> dict[str, Any]:
    return {
        "booking": b.booking_id,
        "case": b.case_id,
        "counselor": b.counselor_id,
        "start": local_text(b.start),
        "modality": b.modality,
    }


def _case_item(
    case: Case, wanted: int, ranges: list[list[str]], hours: float, counselors: set[str]
) -> dict[str, Any]:
    """The case as the solver reads it. A preferred or excluded counselor not
    among `counselors` (unknown, or no contract this year) cannot be booked
    anyway, and the solver refuses references to counselors it lacks."""
    preferred = case.preferred_counselor_id
    return {
        "id": case.case_id,
        "employee": case.employee_id,
        "agency": case.agency_id,
        "category": case.category.value,
        "kind": case.kind.value,
        "sessions": wanted,
        "minutes": case.minutes,
        "modalities": [m.value for m in case.modalities],
        "submitted": local_text(case.submitted_at),
        "availability": ranges,
        "preferred_counselor": preferred if preferred in counselors else None,
        "excluded_counselors": [c for c in case.excluded_counselor_ids if c in counselors],
        "employee_remaining_hours": max(hours, 0),
    }
