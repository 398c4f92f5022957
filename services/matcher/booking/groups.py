"""Group sessions: one counselor, one time, several cases.

The Miaoli plan's rules applied to a group: every participant spends one of
their own sessions (their week's one session and a whole session of their
entitlement), while the counselor's time is one session: it blocks the
counselor once, counts once toward their daily limit, and its provider
minutes and cost are shared out among the participants' quota holds (the
quota service's GroupShare), so each agency pays for its own staff.

Booking a group is a saga, like confirming one booking, on the same state
machine (booking/state.py):
1. under the counselor's row lock, check the counselor once and each case
   on its own, and hold a place (a `held` booking row with the group's id)
   for every case that passes; the same transaction moves them on to
   `confirming`, so this request alone owns their quota steps;
2. reserve each place's share of the quota. Every share depends on the
   group's size, so when the quota refuses some participants, the shares
   already reserved are given back and reserved again for the smaller group;
3. commit each place's quota hold and write the place down as booked.
A crash between the steps leaves places `confirming` and quota holds that
expire unless committed; a retry of the request finds the group as it
stands.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography.fernet import MultiFernet
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher import metrics
from services.matcher.booking import slots
from services.matcher.booking.cancellation import GROUP_CANCELLED, seal
from services.matcher.booking.places import place_of
from services.matcher.booking.saga import QUOTA_HOLD_SECONDS
from services.matcher.booking.slots import Diary
from services.matcher.booking.state import UNDER_WAY, step
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.store import BookingView, appointment, case_of, live
from services.matcher.calendar_port import CalendarPort
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.counselors import Counselor, Modality
from services.matcher.registry.store import counselor_of
from services.rules.codes import RuleCode
from services.rules.office_time import OFFICE_ZONE, local_day
from services.rules.sessions import BOOKABLE_LENGTH_TEXT, SLOT_MINUTES, bookable_length
from services.runtime import clock
from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ServiceError,
)
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.matcher")

MAX_PARTICIPANTS = 30  # the quota service's largest group share


@dataclass(frozen=True)
class GroupRequest:
    group_id: str
    counselor_id: str
    start: datetime | None
    minutes: int
    modality: Modality | None
    case_ids: tuple[str, ...]
    min_participants: int = 0

    def check(self, checker: FieldChecker) -> None:
        checker.identifier(self.group_id, "group_id")
        checker.identifier(self.counselor_id, "counselor_id")
        checker.require(self.start is not None, "start", "required")
        if self.start is not None:
            local = self.start.astimezone(OFFICE_ZONE)
            checker.require(
                local.minute % SLOT_MINUTES == 0 and not local.second and not local.microsecond,
                "start",
                "on the hour or the half hour",
            )
        checker.require(bookable_length(self.minutes), "minutes", BOOKABLE_LENGTH_TEXT)
        checker.require(self.modality is not None, "modality", "required")
        checker.require(
            2 <= len(self.case_ids) <= MAX_PARTICIPANTS,
            "case_ids",
            f"2 to {MAX_PARTICIPANTS} cases",
        )
        for n, case_id in enumerate(self.case_ids):
            checker.identifier(case_id, f"case_ids[{n}]")
        checker.require(
            len(set(self.case_ids)) == len(self.case_ids), "case_ids", "each case at most once"
        )
        checker.require(
            0 <= self.min_participants <= len(self.case_ids),
            "min_participants",
            "0 (meaning 2) to the number of cases",
        )

    @property
    def least(self) -> int:
        return max(self.min_participants, 2)


@dataclass(frozen=True)
class Refusal:
    case_id: str
    rule: str
    message: str


@dataclass(frozen=True)
class GroupResult:
    group_id: str
    bookings: list[BookingView]
    refused: list[Refusal]


class GroupBookings:
    def __init__(
        self,
        engine: AsyncEngine,
        quota: QuotaPort,
        calendars: CalendarPort,
        hold_seconds: int,
        data_keys: MultiFernet,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._data_keys = data_keys  # the caller's cancellation reason is sealed with them
        self._quota = quota
        self._calendars = calendars
        self._hold = timedelta(seconds=hold_seconds)

    async def book(self, request: GroupRequest) -> GroupResult:
        checker = FieldChecker()
        request.check(checker)
        checker.raise_if_any()
        existing = await self._existing(request)
        if existing is not None:
            return existing
        places, cases, refused = await self._hold_places(request)
        places, quota_holds = await self._reserve_shares(request, places, cases, refused)
        confirmed = 0
        for place in places:
            quota_hold = quota_holds[place.booking_id]
            try:
                await self._quota.commit(quota_hold)
            except ServiceError:
                log.warning("group place not confirmed; released")
                await self._quota.release(quota_hold, "confirmation failed")
                await self._release_places([place.booking_id])
                continue
            async with self._sessions() as session, session.begin():
                await step(
                    session,
                    place.booking_id,
                    S.CONFIRMING,
                    S.BOOKED,
                    clock.now(),
                    quota_hold_id=quota_hold,
                    funded=True,
                    hold_expires_at=None,
                )
            confirmed += 1
        metrics.BOOKINGS.labels("booked").inc(confirmed)
        now = clock.now()
        views = [BookingView.of(r, now) for r in await self._places(request.group_id)]
        return GroupResult(request.group_id, [v for v in views if v.state == "booked"], refused)

    async def cancel(self, group_id: str, reason: str) -> list[BookingView]:
        """Cancels every live place of the group; their quota goes back."""
        checker = FieldChecker()
        checker.identifier(group_id, "group_id")
        checker.text(reason, "reason", 200)
        checker.raise_if_any()
        sealed = seal(self._data_keys, reason)
        now = clock.now()
        async with self._sessions() as session, session.begin():
            rows = list(
                await session.scalars(
                    select(BookingRow)
                    .where(BookingRow.group_id == group_id)
                    .order_by(BookingRow.booking_id)
                    .with_for_update()
                )
            )
            if not rows:
                raise NotFound("group_id names no group session")
            if any(BookingView.of(r, now).state == "completed" for r in rows):
                raise FailedPrecondition(
                    RuleCode.SESSION_COMPLETED, "group", "a completed session cannot be cancelled"
                )
            for row in rows:
                state = S(row.state)
                if state in UNDER_WAY - {S.CANCELLING}:
                    raise Aborted(
                        f"{RuleCode.BOOKING_BUSY}: the group session is being changed; retry"
                    )
                if state is S.HELD:
                    await step(
                        session, row.booking_id, S.HELD, S.RELEASED, now, cancel_reason=sealed
                    )
                elif state is S.BOOKED:
                    await step(
                        session, row.booking_id, S.BOOKED, S.CANCELLING, now, cancel_reason=sealed
                    )
                    metrics.BOOKINGS.labels("cancelled").inc()
        for row in rows:
            if row.quota_hold_id and S(row.state) in (S.BOOKED, S.CANCELLING):
                await self._quota.release(
                    row.quota_hold_id, GROUP_CANCELLED, booking_cancelled=True
                )
                async with self._sessions() as session, session.begin():
                    await step(
                        session,
                        row.booking_id,
                        S.CANCELLING,
                        S.CANCELLED,
                        clock.now(),
                        funded=False,
                    )
        return [BookingView.of(r, clock.now()) for r in await self._places(group_id)]

    # -- the saga's steps ------------------------------------------------------------

    async def _existing(self, request: GroupRequest) -> GroupResult | None:
        """The group as it stands, for a retried request; None when new."""
        rows = await self._places(request.group_id)
        if not rows:
            return None
        first = rows[0]
        if (
            first.counselor_id != request.counselor_id
            or first.start != request.start
            or {r.case_id for r in rows} - set(request.case_ids)
        ):
            raise AlreadyExists("group_id names a different group session")
        now = clock.now()
        return GroupResult(request.group_id, [BookingView.of(r, now) for r in rows], [])

    async def _hold_places(
        self, request: GroupRequest
    ) -> tuple[list[BookingRow], dict[str, CaseRow], list[Refusal]]:
        assert request.start is not None and request.modality is not None
        start, modality = request.start, request.modality
        end = start + timedelta(minutes=request.minutes)
        now = clock.now()
        checker = FieldChecker()
        checker.require(start > now, "start", "in the future")
        checker.raise_if_any()
        async with self._sessions() as session, session.begin():
            counselor = await self._lock_counselor(session, request.counselor_id)
            rows = {
                r.case_id: r
                for r in await session.scalars(
                    select(CaseRow).where(CaseRow.case_id.in_(request.case_ids))
                )
            }
            missing = FieldChecker()
            for n, case_id in enumerate(request.case_ids):
                missing.require(case_id in rows, f"case_ids[{n}]", "names no case")
            missing.raise_if_any()
            diary = await self._diary(session, counselor.counselor_id, start, list(rows.values()))
            self._check_counselor(counselor, modality, start, end, diary)
            places: list[BookingRow] = []
            refused: list[Refusal] = []
            where = place_of(counselor, modality)
            for case_id in request.case_ids:
                problem = self._problem(rows[case_id], counselor, request, diary, now)
                if problem is not None:
                    refused.append(Refusal(case_id, *problem))
                    continue
                place = BookingRow(
                    booking_id=uuid.uuid4().hex,
                    case_id=case_id,
                    employee_id=rows[case_id].employee_id,
                    counselor_id=counselor.counselor_id,
                    provider_id=counselor.provider_id,
                    start=start,
                    end=end,
                    minutes=request.minutes,
                    modality=modality.value,
                    location=where.location,
                    video_link=where.video_link,
                    state="held",
                    hold_expires_at=now + self._hold,
                    quota_hold_id="",
                    funded=False,
                    updated_at=now,
                    group_id=request.group_id,
                )
                diary.appointments.append(appointment(place))  # one session a week, here too
                places.append(place)
            if len(places) < request.least:
                raise _too_small(len(places), request.least, refused)
            session.add_all(places)
            await session.flush()
            for place in places:
                await step(session, place.booking_id, S.HELD, S.CONFIRMING, now)
        metrics.BOOKINGS.labels("held").inc(len(places))
        return places, rows, refused

    def _check_counselor(
        self, counselor: Counselor, modality: Modality, start: datetime, end: datetime, diary: Diary
    ) -> None:
        """The counselor's side, once for the whole group."""
        if modality not in counselor.modalities:
            raise FailedPrecondition(
                RuleCode.NOT_BOOKABLE, "counselor", "the counselor does not offer this modality"
            )
        day = local_day(start)
        windows = slots.counselor_windows(counselor, day, day, self._calendars.current)
        if not any(a <= start and end <= b for a, b in windows):
            raise FailedPrecondition(
                RuleCode.NOT_BOOKABLE,
                "counselor",
                "the time is outside the counselor's hours on office days",
            )
        busy = slots.counselor_busy(counselor, start, end, diary)
        if busy is not None:
            raise FailedPrecondition(busy[0], "counselor", busy[1])

    def _problem(
        self,
        row: CaseRow,
        counselor: Counselor,
        request: GroupRequest,
        diary: Diary,
        now: datetime,
    ) -> tuple[str, str] | None:
        """Why this case cannot take a place: (rule, message), or None."""
        assert request.start is not None and request.modality is not None
        case = case_of(row)
        if not case.accepts_group:
            return RuleCode.GROUP_DECLINED, "the case does not accept a group session"
        if request.modality not in case.modalities:
            return RuleCode.NOT_BOOKABLE, "the case does not accept this modality"
        # The case as it would be seen in this group: its length and modality.
        as_member = replace(case, minutes=request.minutes, modalities=(request.modality,))
        problem = slots.unbookable(
            as_member, counselor, request.start, self._calendars.current, now
        )
        if problem is not None:
            return RuleCode.NOT_BOOKABLE, problem
        return slots.case_busy(as_member, request.start, diary)

    async def _reserve_shares(
        self,
        request: GroupRequest,
        places: list[BookingRow],
        cases: dict[str, CaseRow],
        refused: list[Refusal],
    ) -> tuple[list[BookingRow], dict[str, str]]:
        """Each place's quota share; places the quota refuses are released
        and the rest reserved again at the smaller size."""
        while True:
            size = len(places)
            quota_holds: dict[str, str] = {}
            kept: list[BookingRow] = []
            for place in places:
                case = cases[place.case_id]
                try:
                    quota_holds[place.booking_id] = await self._quota.reserve(
                        f"group-{place.booking_id}-{size}",
                        place.employee_id,
                        case.agency_id,
                        case.staff_category,
                        place.provider_id,
                        place.start,
                        place.minutes,
                        QUOTA_HOLD_SECONDS,
                        place.booking_id,
                        group=(size, len(kept)),
                    )
                except FailedPrecondition as refusal:
                    refused.append(Refusal(place.case_id, refusal.rule, refusal.message))
                    continue
                except ServiceError:
                    # The quota service is down or the request is wrong for
                    # everyone: nothing of this attempt may stay held.
                    await self._give_back(places, quota_holds)
                    raise
                kept.append(place)
            if len(kept) == size:
                return kept, quota_holds
            if len(kept) < request.least:
                await self._give_back(places, quota_holds)
                raise _too_small(len(kept), request.least, refused)
            await self._give_back([p for p in places if p not in kept], quota_holds)
            places = kept

    # -- storage ---------------------------------------------------------------------

    async def _places(self, group_id: str) -> list[BookingRow]:
        async with self._sessions() as session:
            return list(
                await session.scalars(
                    select(BookingRow)
                    .where(BookingRow.group_id == group_id)
                    .order_by(BookingRow.booking_id)
                )
            )

    async def _lock_counselor(self, session: AsyncSession, counselor_id: str) -> Counselor:
        row = await session.get(CounselorRow, counselor_id, with_for_update=True)
        if row is None:
            raise NotFound("counselor_id names no counselor")
        return counselor_of(row)

    async def _diary(
        self, session: AsyncSession, counselor_id: str, start: datetime, cases: list[CaseRow]
    ) -> Diary:
        day = datetime.combine(local_day(start), datetime.min.time(), OFFICE_ZONE)
        rows = await session.scalars(
            select(BookingRow).where(
                live(clock.now()),
                or_(
                    and_(
                        BookingRow.counselor_id == counselor_id,
                        BookingRow.start < day + timedelta(days=2),
                        BookingRow.end > day - timedelta(days=1),
                    ),
                    BookingRow.employee_id.in_({c.employee_id for c in cases}),
                    BookingRow.case_id.in_([c.case_id for c in cases]),
                ),
            )
        )
        return Diary(appointment(row) for row in rows)

    async def _give_back(self, places: list[BookingRow], quota_holds: dict[str, str]) -> None:
        """Releases all the quota shares reserved in one round (every share
        changes with the group's size) and gives up `places`."""
        for hold_id in quota_holds.values():
            await self._quota.release(hold_id, "group size changed")
        await self._release_places([p.booking_id for p in places])

    async def _release_places(self, booking_ids: list[str]) -> None:
        now = clock.now()
        async with self._sessions() as session, session.begin():
            for booking_id in booking_ids:
                await step(session, booking_id, S.CONFIRMING, S.RELEASED, now, hold_expires_at=None)


def _too_small(places: int, least: int, refused: list[Refusal]) -> FailedPrecondition:
    rules: dict[str, int] = {}
    for refusal in refused:
        rules[refusal.rule] = rules.get(refusal.rule, 0) + 1
    return FailedPrecondition(
        RuleCode.GROUP_TOO_SMALL,
        "group",
        f"{RuleCode.GROUP_TOO_SMALL}: {places} of the cases can take part, at least {least} needed",
        left={f"refused_{rule.lower()}": str(n) for rule, n in sorted(rules.items())},
    )
