"""The booking saga: confirming, cancelling, completing and moving a
booking, each a step of its state machine with the quota service.

Confirming spends the quota in the same step: the booking's state machine
(state.py) gives the step to one caller, which reserves the quota,
commits it and writes the booking down as booked; a refusal gives the hold
up and names the quota's rule. Cancelling, completing and rescheduling go
the same way, a compare-and-set on the booking first, then the quota
service, then the step's end; a step a crash cut short stays in its state
under way, and `reconcile` finishes it.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher import metrics
from services.matcher.booking import tenant_policy, waitlist
from services.matcher.booking.cancellation import CANCELLED, CancelledBy, attendance_of, seal
from services.matcher.booking.cases import require_open
from services.matcher.booking.completion import Completion
from services.matcher.booking.moves import Moves
from services.matcher.booking.state import UNDER_WAY, step
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.steps import busy, cancelled_meanwhile
from services.matcher.booking.store import BookingView, load_booking, load_case, view
from services.matcher.orm import BookingRow
from services.rules.attendance import Attendance, Charge
from services.rules.codes import RuleCode
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, ServiceError
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.matcher")

QUOTA_HOLD_SECONDS = 300  # the quota hold lives only while ConfirmBooking runs
RECONCILE_AFTER = timedelta(seconds=60)  # a step older than this was cut short
CANCEL_ATTEMPTS = 3  # a cancellation that lost a race to a confirmation tries again


def _completed() -> FailedPrecondition:
    return FailedPrecondition(
        RuleCode.SESSION_COMPLETED, "booking", "a completed session cannot be cancelled"
    )


class BookingSaga(Completion, Moves):
    """Confirming and cancelling here; completing (completion.py) and
    moving (moves.py) in their own modules; and the upkeep that finishes
    the steps a crash cut short."""

    async def confirm(self, booking_id: str) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await load_booking(session, booking_id, own=True)
            case = await load_case(session, row.case_id)
        state = S(row.state)
        if state is S.CONFIRMING:
            return await self._outcome(booking_id)
        if state is not S.HELD:
            return self._settled(row, now)
        require_open(case)  # a hold that slipped past its case's withdrawal lapses
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
            await self._finish_cancelling(booking_id, quota_hold)
            raise cancelled_meanwhile()
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
            await self._finish_cancelling(booking_id, quota_hold)
            raise cancelled_meanwhile()
        metrics.BOOKINGS.labels("booked").inc()
        return await view(self._sessions, booking_id)

    async def reschedule(
        self, booking_id: str, new_booking_id: str
    ) -> tuple[BookingView, BookingView]:
        """Moves a booking (moves.py); inside the notice period, where the
        tenant charges a late cancellation, the old session is cancelled
        late (charged so) once the new one is confirmed on its own quota:
        moving late is no way around the policy."""
        async with self._sessions() as session:
            old = await load_booking(session, booking_id, own=True)
            policy = await tenant_policy.load(session)
        late = (
            S(old.state) is S.BOOKED
            and policy.late_cancellation_charge is not Charge.NONE
            and attendance_of(CancelledBy.EMPLOYEE, old.start, clock.now(), policy) is not None
        )
        if not late:
            return await super().reschedule(booking_id, new_booking_id)
        async with self._sessions() as session:
            new = await load_booking(session, new_booking_id, own=True)
        self._same_case(old, new)
        booked = await self.confirm(new_booking_id)
        return booked, await self.cancel(booking_id, "", CancelledBy.EMPLOYEE)

    async def cancel(
        self, booking_id: str, reason: str, by: CancelledBy = CancelledBy.EMPLOYEE
    ) -> BookingView:
        """Cancels the booking (cancellation.py says what it makes of the
        session: the counselor's, a late one, or one in good time)."""
        checker = FieldChecker()
        checker.text(reason, "reason", 200)
        checker.raise_if_any()
        for _ in range(CANCEL_ATTEMPTS):
            await self._start_cancelling(booking_id, seal(self._data_keys, reason), by)
            async with self._sessions() as session:
                row = await load_booking(session, booking_id)
            state = S(row.state)
            if state is S.CANCELLING and row.quota_hold_id:
                # Whoever finds a cancellation under way may finish it: the
                # quota's part is idempotent, and the booking is cancelled
                # whatever happens.
                await self._finish_cancelling(booking_id, row.quota_hold_id, row.attendance)
            if state in (S.CANCELLING, S.CANCELLED, S.RELEASED):
                return await view(self._sessions, booking_id)
            if state is S.COMPLETED:
                raise _completed()  # a completion won the race
            if state is not S.BOOKED:
                raise busy()  # another step won the race; a retry sees its outcome
            # A confirmation won the race: the booking is booked now, and
            # cancelling it is a step like any other.
        raise busy()

    async def _start_cancelling(
        self, booking_id: str, sealed_reason: bytes | None, by: CancelledBy
    ) -> None:
        """The cancellation's first step, from the state the booking is in
        now: a hold is released; a booking or a confirmation under way
        moves to `cancelling`, a booked one with what the cancellation makes
        of it (its attendance: late, the counselor's). Losing the
        compare-and-set changes nothing."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await load_booking(session, booking_id, own=True)
            state = S(row.state)
            made = None
            if state is S.BOOKED:
                made = attendance_of(by, row.start, now, await tenant_policy.load(session))
            if state in (S.COMPLETED, S.COMPLETING):
                raise _completed()
            if state is S.MOVING or (state is S.CONFIRMING and row.replaces_booking_id):
                # A reschedule owns both bookings until the quota has moved
                # the charge; cancelled meanwhile, the new one would carry
                # it away uncancelled. A retry sees the move's outcome.
                raise busy()
            if state is S.HELD:
                # Lapsed or not, a hold that is given up is released.
                if await step(
                    session,
                    booking_id,
                    S.HELD,
                    S.RELEASED,
                    now,
                    hold_expires_at=None,
                    cancel_reason=sealed_reason,
                ):
                    metrics.BOOKINGS.labels("released").inc()
            elif state in (S.CONFIRMING, S.BOOKED) and await step(
                session,
                booking_id,
                state,
                S.CANCELLING,
                now,
                # (A booked one a move made keeps its replaces_booking_id.)
                condition=BookingRow.replaces_booking_id == "" if state is S.CONFIRMING else None,
                hold_expires_at=None,
                cancel_reason=sealed_reason,
                attendance=made.value if made else "",
            ):
                metrics.BOOKINGS.labels("cancelled").inc()

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

    async def _finish_cancelling(
        self, booking_id: str, quota_hold: str, attendance: str = ""
    ) -> None:
        """The quota's part of a cancellation, then its end: a late one is
        settled as the tenant's policy charges it (and stays funded unless
        charged nothing); any other gives the quota back. A counselor's
        cancellation puts the case at the head of the waitlist, in the
        transaction that ends the booking."""
        funded = False
        if attendance == Attendance.LATE_CANCELLATION:
            async with self._sessions() as session:
                charge = (await tenant_policy.load(session)).late_cancellation_charge
            await self._quota.settle_missed(quota_hold, Attendance.LATE_CANCELLATION, charge)
            funded = charge is not Charge.NONE
        else:
            by_counselor = attendance == Attendance.COUNSELOR_CANCELLED
            reason = Attendance.COUNSELOR_CANCELLED.rule if by_counselor else CANCELLED
            await self._quota.release(quota_hold, str(reason), booking_cancelled=True)
        async with self._sessions() as session, session.begin():
            now = clock.now()
            ended = await step(session, booking_id, S.CANCELLING, S.CANCELLED, now, funded=funded)
            if ended and attendance == Attendance.COUNSELOR_CANCELLED:
                # The seeds' promise to the employee: the counselor's own
                # cancellation offers the case another slot first.
                row = await session.get(BookingRow, booking_id)
                if row is not None:
                    await waitlist.requeue_first(session, row, now)

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
        if state is S.CANCELLING and row.quota_hold_id:
            await self._finish_cancelling(row.booking_id, row.quota_hold_id, row.attendance)
        elif state is S.CANCELLING:
            async with self._sessions() as session, session.begin():
                await step(session, row.booking_id, S.CANCELLING, S.CANCELLED, now, funded=False)
        elif state is S.COMPLETING:
            await self._finish_completing(row)
        elif state is S.CONFIRMING and row.replaces_booking_id:
            async with self._sessions() as session:
                old = await load_booking(session, row.replaces_booking_id)
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
