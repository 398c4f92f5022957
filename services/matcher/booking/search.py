"""Finding slots for a case and holding one: the slot rules (slots.py)
applied to the diary as stored, under the counselor's row lock, with the
quota's room for the slot's fiscal year.

A hold is a booking row in state `held` with a lapse time; while it lives,
nobody else can take its time, on any replica: every hold and confirmation
locks the counselor's registry row, re-reads the live appointments and only
then writes, so two requests for one counselor queue instead of racing.
(On SQLite every write transaction is already alone: BEGIN IMMEDIATE.)
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher import metrics
from services.matcher.booking import slots
from services.matcher.booking.cases import Case, require_open
from services.matcher.booking.offers import EVERY_SLOT, SlotFilter, spread
from services.matcher.booking.payable import payable
from services.matcher.booking.places import place_of
from services.matcher.booking.slots import Diary, Offer
from services.matcher.booking.store import (
    BookingView,
    appointment,
    bearing_on,
    diary_around,
    load_booking,
    load_case,
    lock_counselor,
)
from services.matcher.calendar_port import CalendarPort
from services.matcher.orm import BookingRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.counselors import Counselor
from services.matcher.registry.store import counselor_of
from services.rules.codes import RuleCode
from services.runtime import clock
from services.runtime.audit import AuditTrail
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.fields import FieldChecker

DEFAULT_WINDOW = timedelta(days=14)
LONGEST_WINDOW = timedelta(days=62)


@dataclass(frozen=True)
class SlotPage:
    offers: list[Offer]
    next_offset: int | None  # None after the last page
    none_because: tuple[str, ...]  # the rules that leave nothing to offer at all


def _why_none(
    case: Case, qualified: list[Counselor], diary: Diary, refusals: tuple[str, ...]
) -> tuple[str, ...]:
    if diary.sessions_of(case.case_id) >= case.sessions_wanted:
        return (RuleCode.CASE_FULLY_BOOKED.value,)
    if not qualified:
        return (RuleCode.NO_QUALIFIED_COUNSELOR.value,)
    return refusals or (RuleCode.NO_COMMON_AVAILABILITY.value,)


class SlotSearch:
    def __init__(
        self,
        engine: AsyncEngine,
        quota: QuotaPort,
        calendars: CalendarPort,
        hold_seconds: int,
        crisis_deadline_hours: int,
        audit: AuditTrail | None = None,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._audit = audit
        self._quota = quota
        self._calendars = calendars
        self._hold = timedelta(seconds=hold_seconds)
        self._deadline_hours = crisis_deadline_hours

    async def find_slots(
        self,
        case_id: str,
        start: datetime | None,
        end: datetime | None,
        page: tuple[int, int] = (0, 20),
        replaces: str = "",
        wanted: SlotFilter = EVERY_SLOT,
    ) -> SlotPage:
        """A page of the case's free slots, best first (offers.py), and the
        offset of the next page (None after the last), or why there are none:
        `page` is (offset, size). `replaces` names a booked session of the same case that a
        reschedule would cancel: as for `hold`, its time, its ISO week and
        its place among the sessions wanted count as free, and so does its
        quota. `wanted` narrows the search."""
        now = clock.now()
        begin = start or now
        finish = end or begin + DEFAULT_WINDOW
        checker = FieldChecker()
        checker.require(begin < finish, "window_end", "after window_start")
        checker.require(
            finish - begin <= LONGEST_WINDOW, "window_end", "at most 62 days after window_start"
        )
        checker.raise_if_any()
        async with self._sessions() as session:
            case = await load_case(session, case_id, own=True)
            require_open(case)
            replaced = await _replaced(session, case_id, replaces, now)
            counselors = [
                counselor_of(row)
                for row in await session.scalars(select(CounselorRow).order_by("counselor_id"))
            ]
            searched = wanted.case_for(case)
            qualified = [c for c in wanted.counselors(counselors) if searched.can_see(c)]
            rows = await session.scalars(
                select(BookingRow).where(
                    bearing_on(now, case.employee_id),
                    or_(
                        and_(
                            BookingRow.counselor_id.in_([c.counselor_id for c in qualified]),
                            BookingRow.start < finish + timedelta(days=1),
                            BookingRow.end > begin - timedelta(days=1),
                        ),
                        BookingRow.employee_id == case.employee_id,
                        BookingRow.case_id == case.case_id,
                    ),
                )
            )
            diary = Diary(appointment(row) for row in rows if row.booking_id != replaces)
        found = slots.find(
            searched,
            qualified,
            diary,
            self._calendars.current,
            (begin, finish),
            now,
            self._deadline_hours,
        )
        found = [o for o in found if wanted.keeps(o)]
        paid = await payable(self._quota, case, found, replaced)
        # The case's details and its employee's diary were read for it.
        if self._audit:
            await self._audit.record_reads("cases", [case.case_id])
        ranked = spread(paid.offers, slots.crisis_deadline(case, self._deadline_hours) is not None)
        offset, size = page
        return SlotPage(
            ranked[offset : offset + size],
            offset + size if offset + size < len(ranked) else None,
            () if ranked else _why_none(searched, qualified, diary, paid.refusals),
        )

    async def hold(
        self, case_id: str, counselor_id: str, start: datetime, replaces: str = ""
    ) -> BookingView:
        """Holds the slot for the case. `replaces` names a booking of the
        same case that a reschedule will cancel: its time and week count as
        free for this hold."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            case = await load_case(session, case_id, own=True)
            await _replaced(session, case_id, replaces, now)
            row = await self.hold_in(
                session, case, counselor_id, start, now, now + self._hold, replaces
            )
        metrics.BOOKINGS.labels("held").inc()
        return BookingView.of(row, now)

    async def hold_in(
        self,
        session: AsyncSession,
        case: Case,
        counselor_id: str,
        start: datetime,
        now: datetime,
        expires_at: datetime,
        replaces: str = "",
    ) -> BookingRow:
        """`hold`'s work inside the caller's transaction, lapsing at
        `expires_at` (a waitlist's offer is held longer): the counselor's
        row locked, the slot's rules checked against the live appointments,
        the held booking added. FAILED_PRECONDITION naming the rule when the
        slot cannot be held."""
        counselor = await lock_counselor(session, counselor_id)
        problem = slots.unbookable(case, counselor, start, self._calendars.current, now)
        if problem is not None:
            raise FailedPrecondition(RuleCode.NOT_BOOKABLE, "slot", problem)
        diary = await diary_around(session, case, counselor_id, start, now, {replaces} - {""})
        blocked = slots.blocked_by(case, counselor, start, diary)
        if blocked is not None:
            raise FailedPrecondition(blocked[0], "slot", blocked[1])
        modality = case.modality_with(counselor)
        place = place_of(counselor, modality)
        row = BookingRow(
            booking_id=uuid.uuid4().hex,
            case_id=case.case_id,
            employee_id=case.employee_id,
            counselor_id=counselor.counselor_id,
            provider_id=counselor.provider_id,
            start=start,
            end=start + timedelta(minutes=case.minutes),
            minutes=case.minutes,
            modality=modality.value,
            location=place.location,
            video_link=place.video_link,
            state="held",
            hold_expires_at=expires_at,
            quota_hold_id="",
            funded=False,
            updated_at=now,
        )
        session.add(row)
        return row

    async def check(
        self, case_id: str, counselor_id: str, start: datetime, moved: Collection[str] = ()
    ) -> None:
        """What `hold` would refuse, without holding: FAILED_PRECONDITION
        naming the rule, or nothing (a dry run). `moved` names bookings a
        dry run has moved away already (the first may be this case's own
        that the hold replaces); their times count as free."""
        now = clock.now()
        async with self._sessions() as session:
            case = await load_case(session, case_id, own=True)
            row = await session.get(CounselorRow, counselor_id)
            if row is None:
                raise NotFound("counselor_id names no counselor")
            counselor = counselor_of(row)
            problem = slots.unbookable(case, counselor, start, self._calendars.current, now)
            if problem is not None:
                raise FailedPrecondition(RuleCode.NOT_BOOKABLE, "slot", problem)
            diary = await diary_around(session, case, counselor_id, start, now, moved)
        blocked = slots.blocked_by(case, counselor, start, diary)
        if blocked is not None:
            raise FailedPrecondition(blocked[0], "slot", blocked[1])


async def _replaced(
    session: AsyncSession, case_id: str, replaces: str, now: datetime
) -> BookingRow | None:
    """The booking a reschedule would replace, which must be a booked
    session of the same case; None when nothing is replaced."""
    if not replaces:
        return None
    old = await load_booking(session, replaces, own=True)
    if old.case_id != case_id or BookingView.of(old, now).state != "booked":
        raise InvalidArgument.single("replaces_booking_id", "a booked session of the same case")
    return old
