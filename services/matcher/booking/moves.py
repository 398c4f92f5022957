"""Rescheduling: the saga's step that moves a booking to a new hold of
the same case, the quota's charge with it (the quota service's Move)."""

from __future__ import annotations

from services.matcher import metrics
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.state import step
from services.matcher.booking.steps import SagaSteps, busy
from services.matcher.booking.store import BookingView, load_booking, view
from services.matcher.orm import BookingRow
from services.rules.codes import RuleCode
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, InvalidArgument


class Moves(SagaSteps):
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
            old = await load_booking(session, booking_id, own=True)
            new = await load_booking(session, new_booking_id, own=True)
        self._same_case(old, new)
        if S(new.state) is S.BOOKED and new.replaces_booking_id == booking_id:
            return BookingView.of(new, now), BookingView.of(old, now)  # a retry
        if S(new.state) is S.CONFIRMING and new.replaces_booking_id == booking_id:
            await self._outcome(new_booking_id)
            return await view(self._sessions, new_booking_id), await view(
                self._sessions, booking_id
            )
        if S(old.state) is S.MOVING:
            raise busy()
        if S(old.state) is not S.BOOKED:
            raise FailedPrecondition(
                RuleCode.NOT_BOOKED, "booking", "only a booked session can move"
            )
        async with self._sessions() as session, session.begin():
            if not await step(session, booking_id, S.BOOKED, S.MOVING, now):
                raise busy()
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

    @staticmethod
    def _same_case(old: BookingRow, new: BookingRow) -> None:
        if new.case_id != old.case_id or new.group_id or old.group_id:
            raise InvalidArgument.single("new_booking_id", "a hold of the same case")

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
        return await view(self._sessions, new.booking_id), await view(
            self._sessions, old.booking_id
        )
