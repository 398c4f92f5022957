"""The waitlist's offering pass, on every matcher replica: entries follow
their offers, then free slots are offered down the line.

Following: an offer confirmed (by ConfirmBooking of its held booking) makes
the entry `booked`; one that lapsed or was declined (CancelBooking of the
hold) returns the entry to the line with that slot never offered to it
again, or after MAX_LAPSES ends it; a case withdrawn, or booked another way
since it joined, leaves the line (an offer it held is given back); a window
that passed ends the entry.

Offering: for each waiting entry in line order (rules/waitlist.py: crisis
first, then waiting time), the best slot FindSlots' own search finds for
it (the same rules, the quota's room included) is held for the case until
the offer's deadline, in one transaction with the entry's compare-and-set
from `waiting` to `offered` and the OFFER notice. The hold takes the
counselor's row lock and re-reads the live appointments (search.py), so a
slot goes to one case however many replicas offer at once; the
compare-and-set on the entry's version, so a case gets one offer. A
replica that loses either rolls its transaction back: nothing is left
half made.

The line's order holds against a pass's own staleness too: under the
counselor's lock, before a slot is held for an entry, the pass checks that
no entry ahead of it is waiting that it has not looked at since a slot was
freed (one joined, or came back, after the pass began; or a booking was
released or cancelled since); if one is, it starts again from the top, a
few times at most. So a slot freed while a pass runs goes to the first case
it fits, not to whichever case the pass had reached.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher import metrics
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.slots import Offer
from services.matcher.booking.state import CHARGED
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.store import load_case, lock_counselor
from services.matcher.booking.waitlist import booked_sessions, release_offer
from services.matcher.booking.waitlist_rows import LIVE_STATES, WaitlistRow
from services.matcher.booking.waitlist_state import EntryState, step
from services.matcher.booking.waitlist_views import ahead_of, in_line, wants_of, window_of
from services.matcher.notices.writer import NoticeKind, tell
from services.matcher.orm import BookingRow, CaseRow
from services.rules.waitlist import MAX_LAPSES, offer_deadline
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, NotFound, ServiceError

log = logging.getLogger("eap.matcher")
E = EntryState

BATCH = 200  # entries a pass looks at; the rest wait for the next pass
RESTARTS = 3  # times a pass starts again from the top (see above) before going on
# Booking states that give a slot back.
FREEING = (S.RELEASED.value, S.CANCELLING.value, S.CANCELLED.value)
CANDIDATES = 20  # slots tried per entry, best first, before the next entry


def slot_key(counselor_id: str, start: datetime) -> list[str]:
    """How an entry's `passed` list names a slot."""
    return [counselor_id, start.astimezone(UTC).isoformat()]


class _EntryChanged(Exception):
    """The entry moved on since it was read (another replica's offer)."""


class _Overtaken(Exception):
    """An entry ahead waits that this pass has not looked at since a slot
    was freed: the pass starts again from the top."""


class Offering:
    def __init__(
        self, engine: AsyncEngine, search: SlotSearch, offer_hours: float, tenant: str
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._search = search  # its own, unaudited: no person reads the case here
        self._hours = offer_hours
        self._tenant = tenant  # the gauge's label

    async def run(self) -> int:
        """One pass: entries follow their offers, then offers are made;
        returns how many were made."""
        now = clock.now()
        async with self._sessions() as session:
            live = list(
                await session.scalars(
                    select(WaitlistRow)
                    .where(WaitlistRow.state.in_(LIVE_STATES))
                    .order_by(*in_line())
                    .limit(BATCH)
                )
            )
        for row in live:
            try:
                await self._follow(row, now)
            except ServiceError as error:
                log.warning("waitlist entry not followed", extra={"error": type(error).__name__})
        made = 0
        for attempt in range(RESTARTS + 1):
            began = clock.now()
            async with self._sessions() as session:
                waiting = list(
                    await session.scalars(
                        select(WaitlistRow)
                        .where(WaitlistRow.state == E.WAITING.value)
                        .order_by(*in_line())
                        .limit(BATCH)
                    )
                )
            try:
                for row in waiting:
                    made += await self._offer(row, began if attempt < RESTARTS else None)
            except _Overtaken:
                continue
            break
        await self._count()
        return made

    async def follow_booking(self, booking_id: str) -> None:
        """The entry offered this booking follows it now (the offer accepted
        or declined), rather than at the next pass."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(WaitlistRow).where(
                    WaitlistRow.offer_booking_id == booking_id,
                    WaitlistRow.state == E.OFFERED.value,
                )
            )
        if row is not None:
            await self._follow(row, clock.now())

    async def _follow(self, row: WaitlistRow, now: datetime) -> None:
        state = E(row.state)
        async with self._sessions() as session, session.begin():
            case = await session.get(CaseRow, row.case_id)
            if case is None or case.withdrawn_at is not None:
                if await step(session, row.entry_id, state, E.LEFT, now, version=row.version):
                    await release_offer(session, row.offer_booking_id, now)
                return
            got_one = await booked_sessions(session, row.case_id) > row.sessions_at_join
            booking = (
                await session.get(BookingRow, row.offer_booking_id)
                if row.offer_booking_id
                else None
            )
            if state is E.WAITING or booking is None:
                if got_one:  # booked by the case itself meanwhile
                    await step(session, row.entry_id, state, E.LEFT, now, version=row.version)
                elif window_of(wants_of(row), now) is None:
                    await step(session, row.entry_id, state, E.LAPSED, now, version=row.version)
                return
            held = S(booking.state)
            if held in CHARGED:
                if await step(session, row.entry_id, E.OFFERED, E.BOOKED, now, version=row.version):
                    metrics.WAITLIST_OFFERS.labels("taken").inc()
                return
            if held in (S.CANCELLING, S.CANCELLED):
                # Taken and then cancelled by the case: it no longer waits.
                await step(session, row.entry_id, E.OFFERED, E.LEFT, now, version=row.version)
                return
            lapsed = held is S.RELEASED or (
                held is S.HELD
                and booking.hold_expires_at is not None
                and booking.hold_expires_at <= now
            )
            if not lapsed:
                # Still offered, or its confirmation under way; but a case
                # booked another way meanwhile gives the slot back.
                if (
                    held is S.HELD
                    and got_one
                    and await step(
                        session, row.entry_id, E.OFFERED, E.LEFT, now, version=row.version
                    )
                ):
                    await release_offer(session, booking.booking_id, now)
                return
            # Lapsed or declined: the slot passes on (written down now, not
            # at the next sweep), and the case waits again in its place.
            await release_offer(session, booking.booking_id, now)
            lapses = row.lapses + 1
            if await step(
                session,
                row.entry_id,
                E.OFFERED,
                E.LAPSED if lapses >= MAX_LAPSES else E.WAITING,
                now,
                version=row.version,
                lapses=lapses,
                passed=[*row.passed, slot_key(booking.counselor_id, booking.start)],
                offer_booking_id="",
                offer_expires_at=None,
            ):
                metrics.WAITLIST_OFFERS.labels("lapsed").inc()

    async def _offer(self, row: WaitlistRow, began: datetime | None) -> int:
        """Offers the entry the best slot that fits it and it has not passed
        on; 1 if made, 0 if none was (or another replica's was). `began`:
        when this look down the line began (None: go on regardless)."""
        wants = wants_of(row)
        window = window_of(wants, clock.now())
        if window is None:
            return 0  # ended by the next pass's follow
        try:
            found = await self._search.find_slots(
                row.case_id, window[0], window[1], (0, CANDIDATES), wanted=wants.slot_filter()
            )
        except (FailedPrecondition, NotFound):
            return 0  # withdrawn or purged meanwhile: the next pass ends the entry
        passed = {tuple(p) for p in row.passed}
        for offer in found.offers:
            if tuple(slot_key(offer.counselor.counselor_id, offer.start)) in passed:
                continue
            try:
                if await self._hold_for(row, offer, began):
                    metrics.WAITLIST_OFFERS.labels("made").inc()
                    return 1
            except _EntryChanged:
                return 0
        return 0

    async def _hold_for(self, row: WaitlistRow, offer: Offer, began: datetime | None) -> bool:
        """Holds `offer`'s slot for the entry's case until the deadline, the
        entry offered, the person told: all in one transaction, or nothing.
        False when the slot cannot be offered (taken meanwhile, too close)."""
        now = clock.now()
        deadline = offer_deadline(offer.start, now, self._hours)
        if deadline is None:
            return False
        try:
            async with self._sessions() as session, session.begin():
                case = await load_case(session, row.case_id)
                # The counselor's lock first: holds of this slot queue here.
                await lock_counselor(session, offer.counselor.counselor_id)
                if began is not None and await _overtaken(session, row, began):
                    raise _Overtaken  # rolls back; the pass starts again
                held = await self._search.hold_in(
                    session, case, offer.counselor.counselor_id, offer.start, now, deadline
                )
                await session.flush()
                if not await step(
                    session,
                    row.entry_id,
                    E.WAITING,
                    E.OFFERED,
                    now,
                    version=row.version,
                    offer_booking_id=held.booking_id,
                    offer_expires_at=deadline,
                ):
                    raise _EntryChanged  # rolls the hold back
                await tell(session, held, NoticeKind.OFFER, now)
        except FailedPrecondition:
            return False  # the slot went meanwhile: the next one
        metrics.BOOKINGS.labels("held").inc()
        return True

    async def _count(self) -> None:
        async with self._sessions() as session:
            counts = dict(
                (
                    await session.execute(
                        select(WaitlistRow.state, func.count())
                        .where(WaitlistRow.state.in_(LIVE_STATES))
                        .group_by(WaitlistRow.state)
                    )
                ).all()
            )
        for state in LIVE_STATES:
            metrics.WAITLIST_LENGTH.labels(self._tenant, state).set(counts.get(state, 0))


async def _overtaken(session: AsyncSession, row: WaitlistRow, began: datetime) -> bool:
    """Whether an entry ahead of `row` waits that a pass begun at `began`
    has not looked at since a slot was freed."""
    waiting_ahead = and_(WaitlistRow.state == E.WAITING.value, ahead_of(row))
    unseen = await session.scalar(
        select(WaitlistRow.entry_id).where(waiting_ahead, WaitlistRow.updated_at >= began).limit(1)
    )
    if unseen is not None:
        return True
    freed = await session.scalar(
        select(BookingRow.booking_id)
        .where(BookingRow.state.in_(FREEING), BookingRow.updated_at >= began)
        .limit(1)
    )
    if freed is None:
        return False
    ahead = await session.scalar(select(WaitlistRow.entry_id).where(waiting_ahead).limit(1))
    return ahead is not None
