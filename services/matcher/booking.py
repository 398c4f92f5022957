"""Online booking, one click at a time: cases, slots, holds and bookings.

A hold is a booking row in state `held` with a lapse time; while it lives,
nobody else can take its time, on any replica: every hold and confirmation
locks the counselor's registry row, re-reads the live appointments and only
then writes, so two requests for one counselor queue instead of racing.
(On SQLite every write transaction is already alone: BEGIN IMMEDIATE.)

Confirming spends the quota in the same step: reserve in the quota service,
mark the booking booked, then commit the quota hold. If the reservation is
refused, the hold is given up and the quota's rule is the answer; if the
booking cannot be marked (the hold lapsed and someone took the slot), the
quota hold is released; if the commit fails, the booking is cancelled and
its quota released. `funded` records what the quota service holds for a
booking, so a step a crash cut short shows as a booking whose flag
disagrees with its state, and `reconcile` finishes it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher import metrics, slots
from services.matcher.calendar_port import CalendarPort
from services.matcher.cases import Case, TimeOff, TimeRange, validate
from services.matcher.instance import CaseKind
from services.matcher.orm import LIVE_STATES, BookingRow, CaseRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry import Category, Counselor, Modality, counselor_of
from services.matcher.slots import Appointment, Diary, Offer
from services.rules.codes import RuleCode
from services.rules.office_time import OFFICE_ZONE, iso_week, local_day
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from services.runtime.fields import FieldChecker
from services.runtime.policy import Scope

log = logging.getLogger("eap.matcher")

DEFAULT_WINDOW = timedelta(days=14)
LONGEST_WINDOW = timedelta(days=62)
LONGEST_GROUP_WINDOW = timedelta(days=92)  # a quarter: group sessions are planned ahead
QUOTA_HOLD_SECONDS = 300  # the quota hold lives only while ConfirmBooking runs
RECONCILE_AFTER = timedelta(seconds=60)  # a step older than this was cut short


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

    @classmethod
    def of(cls, row: BookingRow, now: datetime) -> BookingView:
        state = row.state
        if state == "held" and row.hold_expires_at is not None and row.hold_expires_at <= now:
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
        )


@dataclass(frozen=True)
class GroupCandidate:
    """A case that could join a group session, and its limits."""

    case: Case
    sessions_left: int
    availability: tuple[TimeRange, ...]  # cut to the window asked about
    booked_weeks: tuple[str, ...]  # "2027-W10": the employee has a session then
    entitlement_minutes_left: int | None  # None: the account has not opened yet


def _no_case() -> NotFound:
    """What a missing case and a case outside the caller's scope both get."""
    return NotFound("case_id names no case")


def _no_booking() -> NotFound:
    return NotFound("booking_id names no booking")


def live(now: datetime) -> ColumnElement[bool]:
    """Rows that block time: booked, completed, or held and not lapsed."""
    return or_(
        BookingRow.state.in_([s for s in LIVE_STATES if s != "held"]),
        and_(BookingRow.state == "held", BookingRow.hold_expires_at > now),
    )


def appointment(row: BookingRow) -> Appointment:
    return Appointment(
        row.booking_id,
        row.case_id,
        row.employee_id,
        row.counselor_id,
        row.start,
        row.end,
        row.group_id,
    )


def _case_row(case: Case) -> CaseRow:
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
    )


class Bookings:
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

    # -- cases -------------------------------------------------------------------

    async def submit_case(self, case: Case) -> tuple[Case, bool]:
        """Stores the case; a retry with the same content returns the stored one."""
        checker = FieldChecker()
        validate(case, checker)
        checker.raise_if_any()
        if policy.scope() is Scope.REFERRAL:
            if case.kind is not CaseKind.INVOLUNTARY:
                raise PermissionDenied("a supervisor submits involuntary referrals only")
            policy.mark_checked()
        else:
            policy.require_own(
                PermissionDenied("an employee submits only their own cases"),
                employee_id=case.employee_id,
            )
        try:
            return await self._store_case(case)
        except IntegrityError:
            # A concurrent submission of this case id inserted it first: look
            # again, and answer as to a retry.
            return await self._store_case(case)

    async def _store_case(self, case: Case) -> tuple[Case, bool]:
        async with self._sessions() as session, session.begin():
            existing = await session.get(CaseRow, case.case_id)
            if existing is not None:
                stored = case_of(existing)
                if not stored.same_request(case):
                    raise AlreadyExists("case_id names a different case")
                return stored, False
            stored = case.with_submitted_at(clock.now())
            session.add(_case_row(stored))
        return stored, True

    async def get_case(self, case_id: str) -> tuple[Case, list[BookingView]]:
        now = clock.now()
        async with self._sessions() as session:
            case = await self._load_case(session, case_id)
            rows = list(
                await session.scalars(
                    select(BookingRow)
                    .where(BookingRow.case_id == case_id, live(now))
                    .order_by(BookingRow.start)
                )
            )
        policy.require_own(
            _no_case(),
            employee_id=case.employee_id,
            counselor_ids=[row.counselor_id for row in rows],
        )
        if self._audit:
            await self._audit.record("read", f"case/{case_id}")
        return case, [BookingView.of(row, now) for row in rows]

    async def disclose(
        self, case_id: str, recipient: str, legal_reference: str, consent_reference: str
    ) -> tuple[Case, list[BookingView]]:
        """The case for someone outside the roles that may see it: only on a
        legal reference or the person's written consent, and audited."""
        checker = FieldChecker()
        checker.text(recipient, "recipient", 200)
        checker.require(bool(recipient.strip()), "recipient", "required")
        for field, value in (
            ("legal_reference", legal_reference),
            ("consent_reference", consent_reference),
        ):
            checker.text(value, field, 190)
        checker.require(
            bool(legal_reference.strip()) != bool(consent_reference.strip()),
            "legal_reference",
            "exactly one of legal_reference and consent_reference",
        )
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session:
            case = await self._load_case(session, case_id, own=True)
            rows = await session.scalars(
                select(BookingRow).where(BookingRow.case_id == case_id).order_by(BookingRow.start)
            )
            bookings = [BookingView.of(row, now) for row in rows]
        if self._audit is None:
            raise FailedPrecondition(
                "NO_AUDIT_TRAIL", "case", "disclosures need the audit trail to record them"
            )
        reference = (
            f"legal:{legal_reference.strip()}"
            if legal_reference.strip()
            else f"consent:{consent_reference.strip()}"
        )
        await self._audit.record("disclose", f"case/{case_id} to {recipient.strip()}", reference)
        return case, bookings

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
                    .where(CaseRow.category == category.value, CaseRow.accepts_group.is_(True))
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
            year, week = iso_week(b.start)
            weeks.setdefault(b.employee_id, set()).add(f"{year}-W{week:02d}")
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
            await self._audit.record("read", f"group-candidates/{category.value}/{len(found)}")
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
            return [BookingView.of(row, now) for row in rows]

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

    # -- finding and holding slots -------------------------------------------------

    async def find_slots(
        self, case_id: str, start: datetime | None, end: datetime | None, max_slots: int
    ) -> list[Offer]:
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
            case = await self._load_case(session, case_id, own=True)
            counselors = [
                counselor_of(row)
                for row in await session.scalars(select(CounselorRow).order_by("counselor_id"))
            ]
            qualified = [c for c in counselors if case.can_see(c)]
            rows = await session.scalars(
                select(BookingRow).where(
                    live(now),
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
            diary = Diary(appointment(row) for row in rows)
        offers = slots.find(
            case,
            qualified,
            diary,
            self._calendars.current,
            (begin, finish),
            now,
            self._deadline_hours,
        )
        offers = await self._with_quota_room(case, offers)
        return offers[:max_slots]

    async def _with_quota_room(self, case: Case, offers: list[Offer]) -> list[Offer]:
        """Drops slots the quota could not pay for: the provider's hours, the
        employee's entitlement (once their account is open) and the agency's
        budget left in the slot's fiscal year. (The exact price is the quota
        service's to check when the booking is confirmed.)"""
        years = sorted({local_day(o.start).year for o in offers})
        room: dict[tuple[int, str, int], int | None] = {}
        for year in years:
            room[(qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year)] = await self._quota.left(
                qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year
            )
            room[(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)] = await self._quota.left(
                qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year
            )
            for provider in sorted({o.counselor.provider_id for o in offers}):
                room[(qpb.ACCOUNT_KIND_PROVIDER, provider, year)] = await self._quota.left(
                    qpb.ACCOUNT_KIND_PROVIDER, provider, year
                )

        def payable(offer: Offer) -> bool:
            year = local_day(offer.start).year
            agency = room[(qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year)]
            employee = room[(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)]
            provider = room[(qpb.ACCOUNT_KIND_PROVIDER, offer.counselor.provider_id, year)]
            return (
                agency is not None
                and agency > 0
                and provider is not None
                and provider >= case.minutes
                and (employee is None or employee >= case.minutes)
            )

        return [o for o in offers if payable(o)]

    async def hold(
        self, case_id: str, counselor_id: str, start: datetime, replaces: str = ""
    ) -> BookingView:
        """Holds the slot for the case. `replaces` names a booking of the
        same case that a reschedule will cancel: its time and week count as
        free for this hold."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            case = await self._load_case(session, case_id, own=True)
            if replaces:
                old = await self._load_booking(session, replaces, own=True)
                if old.case_id != case_id or BookingView.of(old, now).state != "booked":
                    raise InvalidArgument.single(
                        "replaces_booking_id", "a booked session of the same case"
                    )
            counselor = await self._lock_counselor(session, counselor_id)
            problem = slots.unbookable(case, counselor, start, self._calendars.current, now)
            if problem is not None:
                raise FailedPrecondition(RuleCode.NOT_BOOKABLE, "slot", problem)
            diary = await self._diary(session, case, counselor_id, start, now, replaces)
            blocked = slots.blocked_by(case, counselor, start, diary)
            if blocked is not None:
                raise FailedPrecondition(blocked[0], "slot", blocked[1])
            row = BookingRow(
                booking_id=uuid.uuid4().hex,
                case_id=case.case_id,
                employee_id=case.employee_id,
                counselor_id=counselor.counselor_id,
                provider_id=counselor.provider_id,
                start=start,
                end=start + timedelta(minutes=case.minutes),
                minutes=case.minutes,
                modality=case.modality_with(counselor).value,
                state="held",
                hold_expires_at=now + self._hold,
                quota_hold_id="",
                funded=False,
                updated_at=now,
            )
            session.add(row)
        metrics.BOOKINGS.labels("held").inc()
        return BookingView.of(row, now)

    async def check(self, case_id: str, counselor_id: str, start: datetime) -> None:
        """What `hold` would refuse, without holding: FAILED_PRECONDITION
        naming the rule, or nothing (a dry run)."""
        now = clock.now()
        async with self._sessions() as session:
            case = await self._load_case(session, case_id, own=True)
            row = await session.get(CounselorRow, counselor_id)
            if row is None:
                raise NotFound("counselor_id names no counselor")
            counselor = counselor_of(row)
            problem = slots.unbookable(case, counselor, start, self._calendars.current, now)
            if problem is not None:
                raise FailedPrecondition(RuleCode.NOT_BOOKABLE, "slot", problem)
            diary = await self._diary(session, case, counselor_id, start, now)
        blocked = slots.blocked_by(case, counselor, start, diary)
        if blocked is not None:
            raise FailedPrecondition(blocked[0], "slot", blocked[1])

    # -- confirming, cancelling, completing ----------------------------------------

    async def confirm(self, booking_id: str) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id, own=True)
            case = await self._load_case(session, row.case_id)
        view = BookingView.of(row, now)
        if view.state in ("booked", "completed"):
            return view  # a retried confirmation
        if view.state != "held":
            raise FailedPrecondition(
                RuleCode.HOLD_EXPIRED, "booking", "HOLD_EXPIRED: the hold lapsed or was given up"
            )
        try:
            quota_hold = await self._quota.reserve(
                f"booking-{booking_id}",
                case.employee_id,
                case.agency_id,
                case.staff_category,
                row.provider_id,
                row.start,
                row.minutes,
                QUOTA_HOLD_SECONDS,
                booking_id,
            )
        except FailedPrecondition:
            await self._set_state(booking_id, "released", only_from="held")
            metrics.BOOKINGS.labels("refused").inc()
            raise
        booked = await self._mark_booked(booking_id, quota_hold)
        if not booked:
            await self._quota.release(quota_hold, "hold lapsed before confirmation")
            raise FailedPrecondition(
                RuleCode.HOLD_EXPIRED,
                "booking",
                "HOLD_EXPIRED: the hold lapsed before confirmation",
            )
        try:
            await self._quota.commit(quota_hold)
        except ServiceError:
            await self._set_state(booking_id, "cancelled", only_from="booked")
            await self._quota.release(quota_hold, "confirmation failed")
            raise
        metrics.BOOKINGS.labels("booked").inc()
        return await self._set_funded(booking_id, True)

    async def cancel(self, booking_id: str, reason: str) -> BookingView:
        checker = FieldChecker()
        checker.text(reason, "reason", 200)
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id, lock=True, own=True)
            state = BookingView.of(row, now).state
            if state == "completed":
                raise FailedPrecondition(
                    RuleCode.SESSION_COMPLETED, "booking", "a completed session cannot be cancelled"
                )
            if state in ("held", "booked"):
                row.state = "cancelled" if state == "booked" else "released"
                metrics.BOOKINGS.labels(row.state).inc()
                row.hold_expires_at = None
                row.updated_at = now
            quota_hold, funded = row.quota_hold_id, row.funded
        if quota_hold and funded:
            await self._quota.release(quota_hold, reason or "cancelled")
            return await self._set_funded(booking_id, False)
        return BookingView.of(row, now)

    async def complete(self, booking_id: str, minutes: int) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id, own=True)
        view = BookingView.of(row, now)
        if view.state == "completed":
            return view
        if view.state != "booked":
            raise FailedPrecondition(
                "NOT_BOOKED", "booking", "only a booked session can be completed"
            )
        if not 0 <= minutes <= row.minutes:
            raise InvalidArgument.single("minutes", f"0 to the {row.minutes} minutes booked")
        await self._quota.commit(row.quota_hold_id, minutes, completed=True)
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id, lock=True)
            row.state = "completed"
            metrics.BOOKINGS.labels("completed").inc()
            row.minutes = minutes or row.minutes
            row.funded = True
            row.updated_at = clock.now()
        return BookingView.of(row, clock.now())

    async def reschedule(
        self, booking_id: str, new_booking_id: str
    ) -> tuple[BookingView, BookingView]:
        """Confirms the new hold, then cancels the old booking. The quota's
        one-session-a-week rule would refuse a new slot in the old one's
        week while the old one stands, so within one week the old quota is
        given back first and, should the new one fail, taken again."""
        now = clock.now()
        async with self._sessions() as session:
            old = await self._load_booking(session, booking_id, own=True)
            new = await self._load_booking(session, new_booking_id, own=True)
        if new.case_id != old.case_id:
            raise InvalidArgument.single("new_booking_id", "a hold of the same case")
        if BookingView.of(old, now).state != "booked":
            raise FailedPrecondition("NOT_BOOKED", "booking", "only a booked session can move")
        if iso_week(old.start) != iso_week(new.start):
            confirmed = await self.confirm(new_booking_id)
            return confirmed, await self.cancel(booking_id, "rescheduled")
        previous = await self.cancel(booking_id, "rescheduled")
        try:
            confirmed = await self.confirm(new_booking_id)
        except ServiceError:
            await self._restore(old)
            raise
        return confirmed, previous

    async def _restore(self, old: BookingRow) -> None:
        """Books `old` again after a reschedule within its week failed."""
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, old.booking_id, lock=True)
            row.state, row.hold_expires_at = "held", clock.now() + self._hold
            row.updated_at = clock.now()
        await self.confirm(old.booking_id)

    # -- upkeep --------------------------------------------------------------------

    async def sweep(self) -> int:
        """Writes down lapsed holds as released; returns how many."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            rows = list(
                await session.scalars(
                    select(BookingRow).where(
                        BookingRow.state == "held", BookingRow.hold_expires_at <= now
                    )
                )
            )
            for row in rows:
                row.state, row.hold_expires_at, row.updated_at = "released", None, now
        metrics.HOLDS_EXPIRED.inc(len(rows))
        return len(rows)

    async def reconcile(self) -> int:
        """Finishes confirmations and cancellations a crash cut short: a
        booked, unfunded booking gets its quota committed (or, when its
        quota hold is gone, is cancelled); a cancelled, funded one gets its
        quota released. Returns how many it fixed."""
        stale = clock.now() - RECONCILE_AFTER
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(BookingRow).where(
                        BookingRow.updated_at < stale,
                        BookingRow.quota_hold_id != "",
                        or_(
                            and_(BookingRow.state == "booked", BookingRow.funded.is_(False)),
                            and_(BookingRow.state == "cancelled", BookingRow.funded.is_(True)),
                        ),
                    )
                )
            )
        for row in rows:
            if row.state == "cancelled":
                await self._quota.release(row.quota_hold_id, "cancelled")
                await self._set_funded(row.booking_id, False)
                continue
            try:
                await self._quota.commit(row.quota_hold_id)
            except FailedPrecondition:
                await self._set_state(row.booking_id, "cancelled", only_from="booked")
                await self._quota.release(row.quota_hold_id, "confirmation never finished")
                continue
            await self._set_funded(row.booking_id, True)
        if rows:
            log.warning("bookings reconciled", extra={"count": len(rows)})
        return len(rows)

    # -- storage -------------------------------------------------------------------

    async def _load_case(self, session: AsyncSession, case_id: str, own: bool = False) -> Case:
        """The case; with `own`, only if the caller may act on it (policy.py)."""
        row = await session.get(CaseRow, case_id)
        if row is None:
            raise _no_case()
        if own:
            policy.require_own(_no_case(), employee_id=row.employee_id)
        return case_of(row)

    async def _load_booking(
        self, session: AsyncSession, booking_id: str, lock: bool = False, own: bool = False
    ) -> BookingRow:
        """The booking; with `own`, only if the caller may act on it: its
        employee, or the counselor who holds the session."""
        row = await session.get(BookingRow, booking_id, with_for_update=lock)
        if row is None:
            raise _no_booking()
        if own:
            policy.require_own(
                _no_booking(), employee_id=row.employee_id, counselor_ids=[row.counselor_id]
            )
        return row

    async def _lock_counselor(self, session: AsyncSession, counselor_id: str) -> Counselor:
        """The counselor, with their row locked until the transaction ends:
        holds and confirmations for one counselor go one at a time."""
        row = await session.get(CounselorRow, counselor_id, with_for_update=True)
        if row is None:
            raise NotFound("counselor_id names no counselor")
        return counselor_of(row)

    async def _diary(
        self,
        session: AsyncSession,
        case: Case,
        counselor_id: str,
        start: datetime,
        now: datetime,
        ignoring: str = "",
    ) -> Diary:
        day = local_day(start)
        around = datetime.combine(day, datetime.min.time(), OFFICE_ZONE)
        rows = await session.scalars(
            select(BookingRow).where(
                live(now),
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
        return Diary(appointment(row) for row in rows if row.booking_id != ignoring)

    async def _mark_booked(self, booking_id: str, quota_hold: str) -> bool:
        """Turns a live hold into a booking, under the counselor's lock;
        False when the hold lapsed meanwhile."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id)
            await self._lock_counselor(session, row.counselor_id)
            await session.refresh(row)
            if BookingView.of(row, now).state != "held":
                return False
            row.state, row.hold_expires_at = "booked", None
            row.quota_hold_id, row.funded, row.updated_at = quota_hold, False, now
        return True

    async def _set_state(self, booking_id: str, state: str, only_from: str) -> None:
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id, lock=True)
            if row.state == only_from:
                row.state, row.hold_expires_at, row.updated_at = state, None, clock.now()

    async def _set_funded(self, booking_id: str, funded: bool) -> BookingView:
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id, lock=True)
            row.funded, row.updated_at = funded, clock.now()
        return BookingView.of(row, clock.now())
