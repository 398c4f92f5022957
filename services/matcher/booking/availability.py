"""What the calendar service asks of booking: counselors' free time and
sessions, and the cases that could join a group session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.booking import slots
from services.matcher.booking.cases import Case, TimeRange
from services.matcher.booking.store import BookingView, case_of, live
from services.matcher.calendar_port import CalendarPort
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.counselors import Category
from services.matcher.registry.store import counselor_of
from services.rules.office_time import OFFICE_ZONE, iso_week, local_day
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import NotFound
from services.runtime.fields import FieldChecker

LONGEST_GROUP_WINDOW = timedelta(days=92)  # a quarter: group sessions are planned ahead


@dataclass(frozen=True)
class GroupCandidate:
    """A case that could join a group session, and its limits."""

    case: Case
    sessions_left: int
    availability: tuple[TimeRange, ...]  # cut to the window asked about
    booked_weeks: tuple[str, ...]  # "2027-W10": the employee has a session then
    entitlement_minutes_left: int | None  # None: the account has not opened yet


class Availability:
    def __init__(
        self,
        engine: AsyncEngine,
        quota: QuotaPort,
        calendars: CalendarPort,
        audit: AuditTrail | None = None,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._quota = quota
        self._calendars = calendars
        self._audit = audit

    async def group_candidates(
        self, category: Category, start: datetime, end: datetime, limit: int
    ) -> list[GroupCandidate]:
        """Open cases of `category` whose employees accept a group session,
        oldest first, with what a group session must respect for each."""
        checker = FieldChecker()
        checker.require(start < end, "window_end", "after window_start")
        checker.require(end - start <= LONGEST_GROUP_WINDOW, "window_end", "at most 92 days")
        checker.require(0 <= limit <= 2000, "max_cases", "0 (500) to 2000")
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(CaseRow)
                    .where(
                        CaseRow.category == category.value,
                        CaseRow.accepts_group.is_(True),
                        CaseRow.withdrawn_at.is_(None),
                    )
                    .order_by(CaseRow.submitted_at, CaseRow.case_id)
                )
            )
            employees = sorted({r.employee_id for r in rows})
            booked = list(
                await session.scalars(
                    select(BookingRow).where(live(now), BookingRow.employee_id.in_(employees))
                )
            )
        per_case: dict[str, int] = {}
        weeks: dict[str, set[str]] = {}
        for b in booked:
            per_case[b.case_id] = per_case.get(b.case_id, 0) + 1
            weeks.setdefault(b.employee_id, set()).add(iso_week(b.start).label)
        found = []
        for row in rows:
            case = case_of(row)
            left = case.sessions_wanted - per_case.get(case.case_id, 0)
            if left <= 0:
                continue
            cut = tuple(
                TimeRange(max(r.start, start), min(r.end, end))
                for r in case.availability
                if r.start < end and start < r.end
            )
            if not cut:
                continue
            entitlement = await self._quota.left(
                qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, local_day(start).year
            )
            found.append(
                GroupCandidate(
                    case, left, cut, tuple(sorted(weeks.get(case.employee_id, ()))), entitlement
                )
            )
            if len(found) == (limit or 500):
                break
        if self._audit:
            await self._audit.record_reads("cases", [c.case.case_id for c in found])
        return found

    async def sessions(
        self, counselor_id: str, start: datetime, end: datetime
    ) -> list[BookingView]:
        """The counselor's live and completed sessions in [start, end)."""
        checker = FieldChecker()
        checker.identifier(counselor_id, "counselor_id")
        checker.require(start < end, "window_end", "after window_start")
        checker.require(end - start <= LONGEST_GROUP_WINDOW, "window_end", "at most 92 days")
        checker.raise_if_any()
        policy.require_own(
            NotFound("counselor_id names no counselor"), counselor_ids=[counselor_id]
        )
        now = clock.now()
        async with self._sessions() as session:
            if await session.get(CounselorRow, counselor_id) is None:
                raise NotFound("counselor_id names no counselor")
            rows = await session.scalars(
                select(BookingRow)
                .where(
                    BookingRow.counselor_id == counselor_id,
                    live(now),
                    BookingRow.start < end,
                    BookingRow.end > start,
                )
                .order_by(BookingRow.start, BookingRow.booking_id)
            )
            found = [BookingView.of(row, now) for row in rows]
        if self._audit:
            await self._audit.record_reads("cases", sorted({b.case_id for b in found}))
        return found

    async def free_time(
        self, counselor_ids: list[str], start: datetime, end: datetime
    ) -> list[tuple[str, list[tuple[datetime, datetime]]]]:
        """Each counselor's free ranges in [start, end): their hours on
        office days minus leave, live holds and bookings, and the days they
        already hold their daily maximum."""
        checker = FieldChecker()
        checker.require(1 <= len(counselor_ids) <= 50, "counselor_ids", "1 to 50 counselors")
        for n, counselor_id in enumerate(counselor_ids):
            checker.identifier(counselor_id, f"counselor_ids[{n}]")
        checker.require(start < end, "window_end", "after window_start")
        checker.require(end - start <= LONGEST_GROUP_WINDOW, "window_end", "at most 92 days")
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session:
            rows = {
                r.counselor_id: r
                for r in await session.scalars(
                    select(CounselorRow).where(CounselorRow.counselor_id.in_(counselor_ids))
                )
            }
            missing = [c for c in counselor_ids if c not in rows]
            if missing:
                raise NotFound(f"no counselor {missing[0]!r}")
            booked = list(
                await session.scalars(
                    select(BookingRow).where(
                        live(now),
                        BookingRow.counselor_id.in_(counselor_ids),
                        BookingRow.start < end,
                        BookingRow.end > start,
                    )
                )
            )
        found = []
        floor = max(start, now)
        for counselor_id in counselor_ids:
            counselor = counselor_of(rows[counselor_id])
            hours = slots.counselor_windows(
                counselor, local_day(floor), local_day(end), self._calendars.current
            )
            clipped = [(max(a, floor), min(b, end)) for a, b in hours if a < end and floor < b]
            mine = [b for b in booked if b.counselor_id == counselor_id]
            taken = [(b.start, b.end) for b in mine]
            per_day: dict[date, set[str]] = {}
            for b in mine:
                per_day.setdefault(local_day(b.start), set()).add(b.group_id or b.booking_id)
            for day, sessions in per_day.items():
                if len(sessions) >= counselor.max_sessions_per_day:
                    midnight = datetime.combine(day, time(), OFFICE_ZONE)
                    taken.append((midnight, midnight + timedelta(days=1)))
            found.append((counselor_id, slots.without(clipped, taken)))
        return found
