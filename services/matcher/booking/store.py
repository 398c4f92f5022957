"""Bookings and cases as stored: rows to views and domain objects, and the
reads every booking use case shares (a case or booking the caller may act
on, the counselor row locked, the diary around a slot)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.matcher.booking.cases import Case, TimeOff, TimeRange
from services.matcher.booking.slots import Appointment, Diary
from services.matcher.booking.state import LIVE, SHOWN
from services.matcher.booking.state import BookingState as S
from services.matcher.optimization.instance import CaseKind
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.registry.counselors import Category, Counselor, Modality
from services.matcher.registry.store import counselor_of
from services.rules.office_time import OFFICE_ZONE, local_day
from services.runtime import clock, policy
from services.runtime.errors import NotFound


@dataclass(frozen=True)
class BookingView:
    booking_id: str
    case_id: str
    counselor_id: str
    start: datetime
    minutes: int
    modality: Modality
    state: str  # held, booked, completed, cancelled, released
    hold_expires_at: datetime | None
    group_id: str = ""
    location: str = ""
    video_link: str = ""
    attendance: str = ""  # rules.attendance.Attendance; empty while it is to come

    @classmethod
    def of(cls, row: BookingRow, now: datetime) -> BookingView:
        state = SHOWN[S(row.state)]
        lapsed = row.hold_expires_at is not None and row.hold_expires_at <= now
        if row.state == S.HELD and lapsed:
            state = "released"  # lapsed; the sweep will write it down
        return cls(
            row.booking_id,
            row.case_id,
            row.counselor_id,
            row.start,
            row.minutes,
            Modality(row.modality),
            state,
            row.hold_expires_at if state == "held" else None,
            row.group_id,
            row.location,
            row.video_link,
            row.attendance,
        )


def no_case() -> NotFound:
    """What a missing case and a case outside the caller's scope both get."""
    return NotFound("case_id names no case")


def no_booking() -> NotFound:
    return NotFound("booking_id names no booking")


def live(now: datetime) -> ColumnElement[bool]:
    """Rows that block time: booked, completed, or held and not lapsed."""
    return or_(
        BookingRow.state.in_([s.value for s in LIVE if s is not S.HELD]),
        and_(BookingRow.state == S.HELD.value, BookingRow.hold_expires_at > now),
    )


def bearing_on(now: datetime, employee_id: str) -> ColumnElement[bool]:
    """The rows a booking for `employee_id` must respect: the live ones,
    and the employee's sessions cancelled late but charged, each still its
    week's one session (rules/attendance.py)."""
    return or_(
        live(now),
        and_(
            BookingRow.state == S.CANCELLED.value,
            BookingRow.funded.is_(True),
            BookingRow.employee_id == employee_id,
        ),
    )


def appointment(row: BookingRow) -> Appointment:
    return Appointment(
        row.booking_id,
        row.case_id,
        row.employee_id,
        # A cancelled session charged late keeps the employee's week, not
        # the counselor's time.
        "" if row.state == S.CANCELLED.value else row.counselor_id,
        row.start,
        row.end,
        row.group_id,
    )


def case_row(case: Case) -> CaseRow:
    return CaseRow(
        case_id=case.case_id,
        employee_id=case.employee_id,
        agency_id=case.agency_id,
        staff_category=case.staff_category,
        category=case.category.value,
        kind=case.kind.value,
        referral_reference=case.referral_reference,
        sessions_wanted=case.sessions_wanted,
        minutes=case.minutes,
        modalities=[m.value for m in case.modalities],
        availability=[[r.start.isoformat(), r.end.isoformat()] for r in case.availability],
        preferred_counselor_id=case.preferred_counselor_id,
        excluded_counselor_ids=list(case.excluded_counselor_ids),
        time_off=case.time_off.value,
        submitted_at=case.submitted_at,
        accepts_group=case.accepts_group,
        withdrawn_at=case.withdrawn_at,
    )


def case_of(row: CaseRow) -> Case:
    return Case(
        case_id=row.case_id,
        employee_id=row.employee_id,
        agency_id=row.agency_id,
        staff_category=row.staff_category,
        category=Category(row.category),
        kind=CaseKind(row.kind),
        referral_reference=row.referral_reference,
        sessions_wanted=row.sessions_wanted,
        minutes=row.minutes,
        modalities=tuple(Modality(m) for m in row.modalities),
        availability=tuple(
            TimeRange(datetime.fromisoformat(a), datetime.fromisoformat(b))
            for a, b in row.availability
        ),
        preferred_counselor_id=row.preferred_counselor_id,
        excluded_counselor_ids=tuple(row.excluded_counselor_ids),
        time_off=TimeOff(row.time_off),
        submitted_at=row.submitted_at,
        accepts_group=row.accepts_group,
        withdrawn_at=row.withdrawn_at,
    )


async def load_case(session: AsyncSession, case_id: str, own: bool = False) -> Case:
    """The case; with `own`, only if the caller may act on it (policy.py)."""
    row = await session.get(CaseRow, case_id)
    if row is None:
        raise no_case()
    if own:
        policy.require_own(no_case(), employee_id=row.employee_id)
    return case_of(row)


async def load_booking(
    session: AsyncSession, booking_id: str, lock: bool = False, own: bool = False
) -> BookingRow:
    """The booking; with `own`, only if the caller may act on it: its
    employee, or the counselor who holds the session."""
    row = await session.get(BookingRow, booking_id, with_for_update=lock)
    if row is None:
        raise no_booking()
    if own:
        policy.require_own(
            no_booking(), employee_id=row.employee_id, counselor_ids=[row.counselor_id]
        )
    return row


async def lock_counselor(session: AsyncSession, counselor_id: str) -> Counselor:
    """The counselor, with their row locked until the transaction ends:
    holds and confirmations for one counselor go one at a time."""
    row = await session.get(CounselorRow, counselor_id, with_for_update=True)
    if row is None:
        raise NotFound("counselor_id names no counselor")
    return counselor_of(row)


async def diary_around(
    session: AsyncSession,
    case: Case,
    counselor_id: str,
    start: datetime,
    now: datetime,
    ignoring: Collection[str] = (),
) -> Diary:
    day = local_day(start)
    around = datetime.combine(day, datetime.min.time(), OFFICE_ZONE)
    rows = await session.scalars(
        select(BookingRow).where(
            bearing_on(now, case.employee_id),
            or_(
                and_(
                    BookingRow.counselor_id == counselor_id,
                    BookingRow.start < around + timedelta(days=2),
                    BookingRow.end > around - timedelta(days=1),
                ),
                BookingRow.employee_id == case.employee_id,
                BookingRow.case_id == case.case_id,
            ),
        )
    )
    return Diary(appointment(row) for row in rows if row.booking_id not in ignoring)


async def view(sessions: async_sessionmaker[AsyncSession], booking_id: str) -> BookingView:
    async with sessions() as session:
        row = await load_booking(session, booking_id)
    return BookingView.of(row, clock.now())
