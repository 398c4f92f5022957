"""Completing a session: the saga's step that commits the minutes used to
the quota. Only a booked session that has started can be completed."""

from __future__ import annotations

from services.matcher import metrics
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.state import step
from services.matcher.booking.steps import SagaSteps, busy
from services.matcher.booking.store import BookingView, load_booking, view
from services.matcher.orm import BookingRow
from services.rules.codes import RuleCode
from services.rules.sessions import has_started
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError


class Completion(SagaSteps):
    """CompleteSession's step, and its finish after a crash."""

    async def complete(self, booking_id: str, minutes: int) -> BookingView:
        now = clock.now()
        async with self._sessions() as session:
            row = await load_booking(session, booking_id, own=True)
        state = S(row.state)
        if state is S.COMPLETED:
            return BookingView.of(row, now)
        if state is S.COMPLETING:
            raise busy()
        if state is not S.BOOKED:
            raise FailedPrecondition(
                RuleCode.NOT_BOOKED, "booking", "only a booked session can be completed"
            )
        if not has_started(row.start, now):
            raise FailedPrecondition(
                RuleCode.SESSION_NOT_STARTED, "booking", "the session has not started yet"
            )
        if not 0 <= minutes <= row.minutes:
            raise InvalidArgument.single("minutes", f"0 to the {row.minutes} minutes booked")
        booked_minutes, used = row.minutes, minutes or row.minutes
        async with self._sessions() as session, session.begin():
            # The minutes used are written with the step, so that the
            # reconciler can finish it with the same commit.
            if not await step(session, booking_id, S.BOOKED, S.COMPLETING, now, minutes=used):
                raise busy()
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
        return await view(self._sessions, booking_id)

    async def _finish_completing(self, row: BookingRow) -> None:
        """A completion a crash cut short: its commit again (idempotent), or
        the booking back to booked when the quota refuses it."""
        try:
            await self._quota.commit(row.quota_hold_id, row.minutes, completed=True)
            target = S.COMPLETED
        except FailedPrecondition:
            target = S.BOOKED
        async with self._sessions() as session, session.begin():
            await step(session, row.booking_id, S.COMPLETING, target, clock.now())
