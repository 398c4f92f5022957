"""Online booking, one click at a time: cases, slots, holds and bookings.

A hold is a booking row in state `held` with a lapse time; while it lives,
nobody else can take its time, on any replica: every hold and confirmation
locks the counselor's registry row, re-reads the live appointments and only
then writes, so two requests for one counselor queue instead of racing.
(On SQLite every write transaction is already alone: BEGIN IMMEDIATE.)

Confirming spends the quota in the same step: the booking's state machine
(booking_state.py) gives the step to one caller, which reserves the quota,
commits it and writes the booking down as booked; a refusal gives the hold
up and names the quota's rule. Cancelling, completing and rescheduling go
the same way, a compare-and-set on the booking first, then the quota
service, then the step's end; a step a crash cut short stays in its state
under way, and `reconcile` finishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher import metrics, slots
from services.matcher.booking_state import CHARGED, LIVE, SHOWN, UNDER_WAY, step
from services.matcher.booking_state import BookingState as S
from services.matcher.calendar_port import CalendarPort
from services.matcher.cases import Case, TimeOff, TimeRange, validate
from services.matcher.counselors import Category, Counselor, Modality
from services.matcher.instance import CaseKind
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry import counselor_of
from services.matcher.slots import Appointment, Diary, Offer
from services.rules.codes import RuleCode
from services.rules.office_time import OFFICE_ZONE, iso_week, local_day
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import (
    Aborted,
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
OUTCOME_WAIT_SECONDS = 12.0  # a step another caller owns: two quota calls at most
OUTCOME_POLL_SECONDS = 0.05


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


def _busy() -> Aborted:
    return Aborted(
        f"{RuleCode.BOOKING_BUSY}: another request is changing this booking; retry in a moment"
    )


def _cancelled_meanwhile() -> FailedPrecondition:
    return FailedPrecondition(
        RuleCode.BOOKING_CANCELLED,
        "booking",
        "BOOKING_CANCELLED: the booking was cancelled while it was being confirmed",
    )


def live(now: datetime) -> ColumnElement[bool]:
    """Rows that block time: booked, completed, or held and not lapsed."""
    return or_(
        BookingRow.state.in_([s.value for s in LIVE if s is not S.HELD]),
        and_(BookingRow.state == S.HELD.value, BookingRow.hold_expires_at > now),
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

    # -- confirming, cancelling, completing, moving ---------------------------------
    #
    # Each method takes its step with a compare-and-set (booking_state.step);
    # only the caller that won a step talks to the quota service for it.

    async def confirm(self, booking_id: str) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id, own=True)
            case = await self._load_case(session, row.case_id)
        state = S(row.state)
        if state is S.CONFIRMING:
            return await self._outcome(booking_id)
        if state is not S.HELD:
            return self._settled(row, now)
        async with self._sessions() as session, session.begin():
            won = await step(
                session,
                booking_id,
                S.HELD,
                S.CONFIRMING,
                now,
                condition=BookingRow.hold_expires_at > now,
            )
        if not won:
            return await self._outcome(booking_id)
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
        except FailedPrecondition as refusal:
            await self._refused(booking_id, refusal.rule)
            metrics.BOOKINGS.labels("refused").inc()
            raise
        # Written down before the commit, so that a cancellation meanwhile,
        # or the reconciler after a crash, can give the quota back.
        async with self._sessions() as session, session.begin():
            recorded = await self._record_quota_hold(session, booking_id, quota_hold)
        if not recorded:  # cancelled while the quota was being reserved
            await self._finish_cancelling(booking_id, quota_hold, "cancelled")
            raise _cancelled_meanwhile()
        try:
            await self._quota.commit(quota_hold)
        except FailedPrecondition as refusal:
            await self._quota.release(quota_hold, "confirmation failed")
            await self._refused(booking_id, refusal.rule)
            raise
        async with self._sessions() as session, session.begin():
            booked = await step(
                session,
                booking_id,
                S.CONFIRMING,
                S.BOOKED,
                clock.now(),
                hold_expires_at=None,
                funded=True,
            )
        if not booked:  # cancelled while the quota was being committed
            await self._finish_cancelling(booking_id, quota_hold, "cancelled")
            raise _cancelled_meanwhile()
        metrics.BOOKINGS.labels("booked").inc()
        return await self._view(booking_id)

    async def cancel(self, booking_id: str, reason: str) -> BookingView:
        checker = FieldChecker()
        checker.text(reason, "reason", 200)
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await self._load_booking(session, booking_id, own=True)
            state = S(row.state)
            if state in (S.COMPLETED, S.COMPLETING):
                raise FailedPrecondition(
                    RuleCode.SESSION_COMPLETED,
                    "booking",
                    "a completed session cannot be cancelled",
                )
            if state is S.MOVING:
                raise _busy()
            if state is S.HELD:
                # Lapsed or not, a hold that is given up is released.
                if await step(session, booking_id, S.HELD, S.RELEASED, now, hold_expires_at=None):
                    metrics.BOOKINGS.labels("released").inc()
            elif state in (S.CONFIRMING, S.BOOKED) and await step(
                session, booking_id, state, S.CANCELLING, now, hold_expires_at=None
            ):
                metrics.BOOKINGS.labels("cancelled").inc()
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id)
        if S(row.state) is S.CANCELLING and row.quota_hold_id:
            # Whoever finds a cancellation under way may finish it: releasing
            # is idempotent, and the booking is cancelled whatever happens.
            await self._finish_cancelling(booking_id, row.quota_hold_id, reason or "cancelled")
        elif S(row.state) is S.CONFIRMING:
            raise _busy()  # the race went the other way; a retry sees the outcome
        return await self._view(booking_id)

    async def complete(self, booking_id: str, minutes: int) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id, own=True)
        state = S(row.state)
        if state is S.COMPLETED:
            return BookingView.of(row, now)
        if state is S.COMPLETING:
            raise _busy()
        if state is not S.BOOKED:
            raise FailedPrecondition(
                RuleCode.NOT_BOOKED, "booking", "only a booked session can be completed"
            )
        if not 0 <= minutes <= row.minutes:
            raise InvalidArgument.single("minutes", f"0 to the {row.minutes} minutes booked")
        booked_minutes, used = row.minutes, minutes or row.minutes
        async with self._sessions() as session, session.begin():
            # The minutes used are written with the step, so that the
            # reconciler can finish it with the same commit.
            if not await step(session, booking_id, S.BOOKED, S.COMPLETING, now, minutes=used):
                raise _busy()
        try:
            await self._quota.commit(row.quota_hold_id, used, completed=True)
        except ServiceError:
            async with self._sessions() as session, session.begin():
                await step(
                    session, booking_id, S.COMPLETING, S.BOOKED, clock.now(), minutes=booked_minutes
                )
            raise
        async with self._sessions() as session, session.begin():
            await step(session, booking_id, S.COMPLETING, S.COMPLETED, clock.now())
        metrics.BOOKINGS.labels("completed").inc()
        return await self._view(booking_id)

    async def reschedule(
        self, booking_id: str, new_booking_id: str
    ) -> tuple[BookingView, BookingView]:
        """Moves a booking to a new hold of the same case, atomically: the
        quota service moves the booking's hold to the new session in one
        step (Move), so the rules see one session, never two, and either the
        new booking stands and the old one is cancelled, or the old one
        stands as it was and the caller hears the rule that refused."""
        now = clock.now()
        async with self._sessions() as session:
            old = await self._load_booking(session, booking_id, own=True)
            new = await self._load_booking(session, new_booking_id, own=True)
        if new.case_id != old.case_id or new.group_id or old.group_id:
            raise InvalidArgument.single("new_booking_id", "a hold of the same case")
        if S(new.state) is S.BOOKED and new.replaces_booking_id == booking_id:
            return BookingView.of(new, now), BookingView.of(old, now)  # a retry
        if S(new.state) is S.CONFIRMING and new.replaces_booking_id == booking_id:
            await self._outcome(new_booking_id)
            return await self._view(new_booking_id), await self._view(booking_id)
        if S(old.state) is S.MOVING:
            raise _busy()
        if S(old.state) is not S.BOOKED:
            raise FailedPrecondition(
                RuleCode.NOT_BOOKED, "booking", "only a booked session can move"
            )
        async with self._sessions() as session, session.begin():
            if not await step(session, booking_id, S.BOOKED, S.MOVING, now):
                raise _busy()
            if not await step(
                session,
                new_booking_id,
                S.HELD,
                S.CONFIRMING,
                now,
                condition=BookingRow.hold_expires_at > now,
                replaces_booking_id=booking_id,
            ):
                # Raising rolls both steps back: the old booking stays booked.
                raise FailedPrecondition(
                    RuleCode.HOLD_EXPIRED,
                    "booking",
                    "HOLD_EXPIRED: the new slot's hold lapsed or was given up",
                )
        return await self._move(old, new)

    async def _move(self, old: BookingRow, new: BookingRow) -> tuple[BookingView, BookingView]:
        """The quota's part of a reschedule, and its outcome written down."""
        try:
            await self._quota.move(
                old.quota_hold_id,
                old.employee_id,
                new.provider_id,
                new.start,
                new.minutes,
                new.booking_id,
            )
        except FailedPrecondition as refusal:
            async with self._sessions() as session, session.begin():
                await step(session, old.booking_id, S.MOVING, S.BOOKED, clock.now())
                await step(
                    session,
                    new.booking_id,
                    S.CONFIRMING,
                    S.RELEASED,
                    clock.now(),
                    outcome=refusal.rule[:32],
                    hold_expires_at=None,
                )
            metrics.BOOKINGS.labels("refused").inc()
            raise
        async with self._sessions() as session, session.begin():
            now = clock.now()
            await step(
                session,
                new.booking_id,
                S.CONFIRMING,
                S.BOOKED,
                now,
                quota_hold_id=old.quota_hold_id,
                funded=True,
                hold_expires_at=None,
            )
            await step(session, old.booking_id, S.MOVING, S.CANCELLED, now, funded=False)
        metrics.BOOKINGS.labels("booked").inc()
        metrics.BOOKINGS.labels("cancelled").inc()
        return await self._view(new.booking_id), await self._view(old.booking_id)

    async def _outcome(self, booking_id: str) -> BookingView:
        """What a step another caller owns comes to: waits for it (two
        quota calls at most), then answers as that caller was answered."""
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTCOME_WAIT_SECONDS
        while True:
            async with self._sessions() as session:
                row = await self._load_booking(session, booking_id)
            if S(row.state) not in UNDER_WAY or loop.time() > until:
                break
            await asyncio.sleep(OUTCOME_POLL_SECONDS)
        if S(row.state) in UNDER_WAY:
            raise _busy()
        return self._settled(row, clock.now())

    def _settled(self, row: BookingRow, now: datetime) -> BookingView:
        """A confirmation's answer from a booking no longer held."""
        view = BookingView.of(row, now)
        state = S(row.state)
        if state in CHARGED:
            return view  # a retried confirmation
        if state in (S.CANCELLED, S.CANCELLING):
            raise _cancelled_meanwhile()
        if state is S.RELEASED and row.outcome:
            raise FailedPrecondition(
                row.outcome, "booking", f"{row.outcome}: the confirmation was refused"
            )
        raise FailedPrecondition(
            RuleCode.HOLD_EXPIRED, "booking", "HOLD_EXPIRED: the hold lapsed or was given up"
        )

    async def _refused(self, booking_id: str, rule: str) -> None:
        """A confirmation the quota refused: the hold is given up, or, if it
        was cancelled meanwhile, the cancellation finishes."""
        async with self._sessions() as session, session.begin():
            now = clock.now()
            released = await step(
                session,
                booking_id,
                S.CONFIRMING,
                S.RELEASED,
                now,
                outcome=rule[:32],
                hold_expires_at=None,
            )
            if not released:
                await step(session, booking_id, S.CANCELLING, S.CANCELLED, now, funded=False)

    async def _record_quota_hold(
        self, session: AsyncSession, booking_id: str, quota_hold: str
    ) -> bool:
        result = await session.execute(
            update(BookingRow)
            .where(BookingRow.booking_id == booking_id, BookingRow.state == S.CONFIRMING.value)
            .values(quota_hold_id=quota_hold, updated_at=clock.now())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return True
        # Not confirming any more: cancelled meanwhile. Note the hold anyway,
        # for the reconciler, should this process stop before releasing it.
        await session.execute(
            update(BookingRow)
            .where(BookingRow.booking_id == booking_id, BookingRow.quota_hold_id == "")
            .values(quota_hold_id=quota_hold)
            .execution_options(synchronize_session=False)
        )
        return False

    async def _finish_cancelling(self, booking_id: str, quota_hold: str, reason: str) -> None:
        await self._quota.release(quota_hold, reason, booking_cancelled=True)
        async with self._sessions() as session, session.begin():
            await step(session, booking_id, S.CANCELLING, S.CANCELLED, clock.now(), funded=False)

    async def _view(self, booking_id: str) -> BookingView:
        async with self._sessions() as session:
            row = await self._load_booking(session, booking_id)
        return BookingView.of(row, clock.now())

    # -- upkeep --------------------------------------------------------------------

    async def sweep(self) -> int:
        """Writes down lapsed holds as released; returns how many."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(BookingRow)
                .where(BookingRow.state == S.HELD.value, BookingRow.hold_expires_at <= now)
                .values(state=S.RELEASED.value, hold_expires_at=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        swept = int(result.rowcount)  # type: ignore[attr-defined]
        metrics.HOLDS_EXPIRED.inc(swept)
        return swept

    async def reconcile(self) -> int:
        """Finishes the steps a crash cut short: a booking left in a state
        under way (booking_state.UNDER_WAY) for longer than any caller
        waits. Every quota call here is idempotent, so a step finished
        twice comes out as once. Returns how many it finished."""
        stale = clock.now() - RECONCILE_AFTER
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(BookingRow).where(
                        BookingRow.updated_at < stale,
                        BookingRow.state.in_([s.value for s in UNDER_WAY]),
                        BookingRow.group_id == "",
                    )
                )
            )
        fixed = 0
        for row in rows:
            try:
                await self._reconcile(row)
            except ServiceError as error:
                log.warning("booking not reconciled", extra={"error": type(error).__name__})
                continue
            fixed += 1
        if rows:
            log.warning("bookings reconciled", extra={"count": fixed})
        return fixed

    async def _reconcile(self, row: BookingRow) -> None:
        state, now = S(row.state), clock.now()
        if state is S.CANCELLING:
            if row.quota_hold_id:
                await self._quota.release(row.quota_hold_id, "cancelled", booking_cancelled=True)
            async with self._sessions() as session, session.begin():
                await step(session, row.booking_id, S.CANCELLING, S.CANCELLED, now, funded=False)
        elif state is S.COMPLETING:
            try:
                await self._quota.commit(row.quota_hold_id, row.minutes, completed=True)
                target = S.COMPLETED
            except FailedPrecondition:
                target = S.BOOKED
            async with self._sessions() as session, session.begin():
                await step(session, row.booking_id, S.COMPLETING, target, now)
        elif state is S.CONFIRMING and row.replaces_booking_id:
            async with self._sessions() as session:
                old = await self._load_booking(session, row.replaces_booking_id)
            with contextlib.suppress(FailedPrecondition):
                await self._move(old, row)
        elif state is S.CONFIRMING and not row.quota_hold_id:
            # The reservation's answer never arrived: no charge was made
            # (a quota hold it may have left lapses on its own).
            async with self._sessions() as session, session.begin():
                await step(session, row.booking_id, S.CONFIRMING, S.RELEASED, now)
        elif state is S.CONFIRMING:
            try:
                await self._quota.commit(row.quota_hold_id)
            except FailedPrecondition as refusal:
                await self._quota.release(row.quota_hold_id, "confirmation never finished")
                await self._refused(row.booking_id, refusal.rule)
                return
            async with self._sessions() as session, session.begin():
                await step(session, row.booking_id, S.CONFIRMING, S.BOOKED, now, funded=True)
        elif state is S.MOVING:
            async with self._sessions() as session:
                moving_to = await session.scalar(
                    select(BookingRow).where(
                        BookingRow.replaces_booking_id == row.booking_id,
                        BookingRow.state == S.CONFIRMING.value,
                    )
                )
            if moving_to is None:  # the new booking's side was settled already
                async with self._sessions() as session, session.begin():
                    await step(session, row.booking_id, S.MOVING, S.BOOKED, now)

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
