"""Completing a session: the saga's step that commits the minutes used to
the quota, or settles a session that did not take place (a no-show, a late
cancellation the employee telephoned in) as the tenant's booking policy
charges it. Only a booked session that has started can be completed."""

from __future__ import annotations

from services.matcher import metrics
from services.matcher.booking import tenant_policy
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.state import step
from services.matcher.booking.steps import SagaSteps, busy
from services.matcher.booking.store import BookingView, load_booking, view
from services.matcher.orm import BookingRow
from services.matcher.survey.invite import invite
from services.rules.attendance import Attendance, Charge
from services.rules.codes import RuleCode
from services.rules.sessions import has_started
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError


class Completion(SagaSteps):
    """CompleteSession's step, and its finish after a crash."""

    async def complete(
        self, booking_id: str, minutes: int, outcome: Attendance = Attendance.ATTENDED
    ) -> BookingView:
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
        attended = outcome is Attendance.ATTENDED
        if not 0 <= minutes <= (row.minutes if attended else 0):
            raise InvalidArgument.single(
                "minutes",
                f"0 to the {row.minutes} minutes booked"
                if attended
                else "0: it did not take place",
            )
        booked_minutes, used = row.minutes, minutes or row.minutes
        async with self._sessions() as session, session.begin():
            # The minutes used and the outcome are written with the step, so
            # that the reconciler can finish it with the same commit.
            if not await step(
                session,
                booking_id,
                S.BOOKED,
                S.COMPLETING,
                now,
                minutes=used,
                attendance=outcome.value,
            ):
                raise busy()
        try:
            funded = await self._settle(row.quota_hold_id, used, outcome)
        except ServiceError:
            async with self._sessions() as session, session.begin():
                await step(
                    session,
                    booking_id,
                    S.COMPLETING,
                    S.BOOKED,
                    clock.now(),
                    minutes=booked_minutes,
                    attendance="",
                )
            raise
        await self._complete(booking_id, funded)
        metrics.BOOKINGS.labels("completed" if attended else outcome.value).inc()
        return await view(self._sessions, booking_id)

    async def _settle(self, quota_hold: str, minutes: int, outcome: Attendance) -> bool:
        """The quota's part: the minutes used committed, or the missed
        session charged as the policy says. Whether the quota still holds a
        charge for it (booking.funded) afterwards."""
        if outcome is Attendance.ATTENDED:
            await self._quota.commit(quota_hold, minutes, completed=True)
            return True
        async with self._sessions() as session:
            charge = (await tenant_policy.load(session)).charge_for(outcome)
        await self._quota.settle_missed(quota_hold, outcome, charge)
        return charge is not Charge.NONE

    async def _finish_completing(self, row: BookingRow) -> None:
        """A completion a crash cut short: its quota part again
        (idempotent), or the booking back to booked when the quota refuses
        it."""
        outcome = Attendance(row.attendance or Attendance.ATTENDED)
        try:
            funded = await self._settle(row.quota_hold_id, row.minutes, outcome)
        except FailedPrecondition:
            async with self._sessions() as session, session.begin():
                await step(
                    session, row.booking_id, S.COMPLETING, S.BOOKED, clock.now(), attendance=""
                )
            return
        await self._complete(row.booking_id, funded)

    async def _complete(self, booking_id: str, funded: bool) -> None:
        """The last step; for an attended session, the survey's invitation
        and its notice in the same transaction (survey/invite.py)."""
        async with self._sessions() as session, session.begin():
            now = clock.now()
            if await step(session, booking_id, S.COMPLETING, S.COMPLETED, now, funded=funded):
                row = await session.get(BookingRow, booking_id, populate_existing=True)
                assert row is not None  # the step just moved it
                await invite(session, row, now, self._data_keys)
