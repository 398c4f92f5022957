"""The waitlist (issue 16, item 2): a case that FindSlots finds nothing for
may wait, and a slot freed later is offered to it (waitlist_offers.py).

Joining is refused while a fitting slot is free (SLOTS_AVAILABLE: book
it), so that the list holds only cases nothing fits; a case waits at most
once at a time (ALREADY_WAITING; the store's partial unique index makes it
so across replicas); a retry with the same request_id answers the same
entry. A counselor's own cancellation puts the case back on the list ahead
of the others of its kind (`requeue_first`, in the cancellation's own
transaction). Leaving gives an offer held for the case back at once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher import metrics
from services.matcher.booking import state as booking_state
from services.matcher.booking.cases import require_open
from services.matcher.booking.search import DEFAULT_WINDOW, SlotSearch
from services.matcher.booking.state import CHARGED
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.store import load_case
from services.matcher.booking.waitlist_rows import LIVE_STATES, WaitlistRow
from services.matcher.booking.waitlist_state import LIVE, EntryState, step
from services.matcher.booking.waitlist_views import (
    EntryView,
    Wants,
    hhmm,
    in_line,
    position_of,
    wants_of,
)
from services.matcher.optimization.instance import CaseKind
from services.matcher.orm import BookingRow, CaseRow
from services.rules.codes import RuleCode
from services.rules.waitlist import rank
from services.runtime import clock, policy
from services.runtime.auth import current_identity
from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from services.runtime.fields import FieldChecker
from services.runtime.policy import Scope

E = EntryState


async def booked_sessions(session: AsyncSession, case_id: str, ignoring: str = "") -> int:
    """The case's sessions the quota pays for now (booked, under way, done)."""
    count = await session.scalar(
        select(func.count())
        .select_from(BookingRow)
        .where(
            BookingRow.case_id == case_id,
            BookingRow.state.in_([s.value for s in CHARGED]),
            BookingRow.booking_id != ignoring,
        )
    )
    return int(count or 0)


def entry_id_for(case_id: str, request_id: str) -> str:
    digest = hashlib.sha256(f"{case_id}\0{request_id}".encode()).hexdigest()[:32]
    return f"wait-{digest}"


def _already_waiting() -> FailedPrecondition:
    return FailedPrecondition(
        RuleCode.ALREADY_WAITING, "case", "ALREADY_WAITING: the case is on the waitlist already"
    )


def _row_for(
    entry_id: str, case: CaseRow, wants: Wants, now: datetime, **more: object
) -> dict[str, object]:
    crisis = case.kind == CaseKind.CRISIS.value
    return {
        "entry_id": entry_id,
        "case_id": case.case_id,
        "employee_id": case.employee_id,
        "rank": rank(crisis, bool(more.get("requeued", False))),
        "crisis": crisis,
        "window_start": wants.window_start,
        "window_end": wants.window_end,
        "modalities": [m.value for m in wants.modalities],
        "counselor_id": wants.counselor_id,
        "earliest_time": hhmm(wants.earliest),
        "latest_time": hhmm(wants.latest),
        "languages": list(wants.languages),
        "waiting_since": now,
        "state": E.WAITING.value,
        "offer_booking_id": "",
        "passed": [],
        "lapses": 0,
        "version": 0,
        "created_at": now,
        "updated_at": now,
        **more,
    }


class Waitlist:
    """Joining, leaving and reading the list; `requeue_first` for the saga."""

    def __init__(self, engine: AsyncEngine, search: SlotSearch) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._search = search

    async def join(self, case_id: str, request_id: str, wants: Wants) -> tuple[EntryView, bool]:
        """Puts the case in line; (its entry, whether this call made it)."""
        now = clock.now()
        checker = FieldChecker()
        checker.idempotency_key(request_id, "request_id")
        wants.check(checker, now)
        checker.raise_if_any()
        entry_id = entry_id_for(case_id, request_id)
        async with self._sessions() as session:
            case = await load_case(session, case_id, own=True)
            require_open(case)
            existing = await self._answered(session, entry_id, wants)
            if existing is not None:
                return existing, False
            if await self._live_entry(session, case_id) is not None:
                raise _already_waiting()
            unknown = [m for m in wants.modalities if m not in case.modalities]
            if unknown:
                raise FailedPrecondition(
                    RuleCode.NOT_BOOKABLE, "modalities", "a modality the case does not accept"
                )
            at_join = await booked_sessions(session, case_id)
        begin = max(now, wants.window_start)
        found = await self._search.find_slots(
            case_id, begin, wants.window_end, (0, 1), wanted=wants.slot_filter()
        )
        if found.offers:
            raise FailedPrecondition(
                RuleCode.SLOTS_AVAILABLE,
                "case",
                "SLOTS_AVAILABLE: a slot that fits is free now: book it instead",
            )
        if RuleCode.CASE_FULLY_BOOKED.value in found.none_because:
            raise FailedPrecondition(
                RuleCode.CASE_FULLY_BOOKED, "case", "the case has all the sessions it wants"
            )
        try:
            async with self._sessions() as session, session.begin():
                row = await session.get(CaseRow, case_id)
                assert row is not None
                session.add(
                    WaitlistRow(**_row_for(entry_id, row, wants, now, sessions_at_join=at_join))
                )
        except IntegrityError:
            # A concurrent join of this case won: the same request, or another.
            async with self._sessions() as session:
                answered = await self._answered(session, entry_id, wants)
            if answered is None:
                raise _already_waiting() from None
            return answered, False
        metrics.WAITLIST_JOINED.inc()
        return await self.entry(entry_id), True

    async def _answered(
        self, session: AsyncSession, entry_id: str, wants: Wants
    ) -> EntryView | None:
        """The entry a retry of this request made, if any (ALREADY_EXISTS if
        it asked for something else)."""
        row = await session.get(WaitlistRow, entry_id)
        if row is None:
            return None
        if wants_of(row) != wants:
            raise AlreadyExists("this request_id joined the waitlist with other wishes")
        return EntryView.of(row, await position_of(session, row))

    @staticmethod
    async def _live_entry(session: AsyncSession, case_id: str) -> WaitlistRow | None:
        return await session.scalar(
            select(WaitlistRow).where(
                WaitlistRow.case_id == case_id, WaitlistRow.state.in_(LIVE_STATES)
            )
        )

    async def entry(self, entry_id: str, own: bool = False) -> EntryView:
        async with self._sessions() as session:
            row = await session.get(WaitlistRow, entry_id)
            if row is None:
                raise NotFound("entry_id names no waitlist entry")
            if own:
                policy.require_own(
                    NotFound("entry_id names no waitlist entry"), employee_id=row.employee_id
                )
            return EntryView.of(row, await position_of(session, row))

    async def of_case(self, case_id: str) -> EntryView | None:
        """The case's live entry, or its latest; None if it never waited.
        (The caller has checked that it may read the case.)"""
        async with self._sessions() as session:
            row = await session.scalar(
                select(WaitlistRow)
                .where(WaitlistRow.case_id == case_id)
                .order_by(WaitlistRow.created_at.desc(), WaitlistRow.entry_id)
                .limit(1)
            )
            return EntryView.of(row, await position_of(session, row)) if row else None

    async def leave(self, entry_id: str) -> EntryView:
        """Takes the case out of line; an offer it holds is given back.
        Leaving an entry no longer in line answers it as it is."""
        await self.entry(entry_id, own=True)
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await session.get(WaitlistRow, entry_id)
            assert row is not None
            if E(row.state) in LIVE and await step(
                session, entry_id, LIVE, E.LEFT, now, offer_expires_at=None
            ):
                await release_offer(session, row.offer_booking_id, now)
        return await self.entry(entry_id)

    async def line(
        self, employee_id: str, after: int, limit: int, ended: bool = False
    ) -> list[EntryView]:
        """The line in order from position `after` + 1 (an administrator's
        whole line, or one employee's entries); with `ended`, the entries
        no longer in line too, newest first after the live ones. An employee
        reads only their own."""
        if policy.scope() is Scope.OWN:
            employee_id = employee_id or current_identity().subject
        if employee_id:
            checker = FieldChecker()
            checker.identifier(employee_id, "employee_id")
            checker.raise_if_any()
            policy.require_own(
                PermissionDenied("an employee reads only their own entries"),
                employee_id=employee_id,
            )
        else:
            policy.mark_checked()  # scope ANY: an administrator's whole line
        states = [s.value for s in E] if ended else list(LIVE_STATES)
        query = select(WaitlistRow).where(WaitlistRow.state.in_(states))
        if employee_id:
            query = query.where(WaitlistRow.employee_id == employee_id)
        live_first = (~WaitlistRow.state.in_(LIVE_STATES)).asc()
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    query.order_by(live_first, *in_line()).offset(after).limit(limit)
                )
            )
            return [EntryView.of(row, await position_of(session, row)) for row in rows]


async def release_offer(session: AsyncSession, booking_id: str, now: datetime) -> None:
    """Gives back the slot an offer holds (its held booking), if it is still
    only held: confirmed meanwhile, it is the case's booking."""
    if booking_id and await booking_state.step(
        session, booking_id, S.HELD, S.RELEASED, now, hold_expires_at=None
    ):
        metrics.BOOKINGS.labels("released").inc()


REQUEUE_WINDOW = DEFAULT_WINDOW  # what a requeued case waits for: a slot soon


async def requeue_first(session: AsyncSession, booking_row: BookingRow, now: datetime) -> None:
    """The counselor cancelled `booking_row`'s session: its case is put in
    line ahead of every case of its kind (rules/waitlist.rank), for any
    qualified counselor's slot from now until two weeks after the lost
    session, in the caller's transaction. A case already in line moves up,
    keeping its wishes; a withdrawn case is not put back. Safe to call again
    for the same booking (a retried step): the entry's id is the booking's."""
    case = await session.get(CaseRow, booking_row.case_id)
    if case is None or case.withdrawn_at is not None:
        return
    live = await Waitlist._live_entry(session, case.case_id)
    if live is None:
        end = max(now, booking_row.start) + REQUEUE_WINDOW
        fields = _row_for(
            f"requeue-{booking_row.booking_id}",
            case,
            Wants(now, end),
            now,
            requeued=True,
            sessions_at_join=await booked_sessions(session, case.case_id, booking_row.booking_id),
        )
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        result = await session.execute(
            dialect.insert(WaitlistRow).values(**fields).on_conflict_do_nothing()
        )
        if getattr(result, "rowcount", 0):
            metrics.WAITLIST_JOINED.inc()
            return
        # A join of this case, or this very requeue, got there first.
        live = await Waitlist._live_entry(session, case.case_id)
        if live is None:
            return  # this booking's requeue, taken already and since ended
    crisis = case.kind == CaseKind.CRISIS.value
    state = E(live.state)
    await step(session, live.entry_id, state, state, now, requeued=True, rank=rank(crisis, True))
