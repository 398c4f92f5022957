"""What every step of the booking saga shares (saga.py, moves.py,
completion.py): the stores it works on, the answers a step owned by
another caller gets, and the refusals they have in common."""

from __future__ import annotations

import asyncio
from datetime import datetime

from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.state import CHARGED, UNDER_WAY
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.store import BookingView, load_booking
from services.matcher.orm import BookingRow
from services.matcher.quota_port import QuotaPort
from services.rules.codes import RuleCode
from services.runtime import clock
from services.runtime.errors import Aborted, FailedPrecondition

OUTCOME_WAIT_SECONDS = 12.0  # a step another caller owns: two quota calls at most
OUTCOME_POLL_SECONDS = 0.05


def busy() -> Aborted:
    return Aborted(
        f"{RuleCode.BOOKING_BUSY}: another request is changing this booking; retry in a moment"
    )


def cancelled_meanwhile() -> FailedPrecondition:
    return FailedPrecondition(
        RuleCode.BOOKING_CANCELLED,
        "booking",
        "BOOKING_CANCELLED: the booking was cancelled while it was being confirmed",
    )


class SagaSteps:
    """The base of BookingSaga: each method takes its step with a
    compare-and-set (state.step); only the caller that won a step talks to
    the quota service for it."""

    def __init__(self, engine: AsyncEngine, quota: QuotaPort, data_keys: MultiFernet) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._quota = quota
        self._data_keys = data_keys  # the caller's cancellation reason is sealed with them

    async def _outcome(self, booking_id: str) -> BookingView:
        """What a step another caller owns comes to: waits for it (two
        quota calls at most), then answers as that caller was answered."""
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTCOME_WAIT_SECONDS
        while True:
            async with self._sessions() as session:
                row = await load_booking(session, booking_id)
            if S(row.state) not in UNDER_WAY or loop.time() > until:
                break
            await asyncio.sleep(OUTCOME_POLL_SECONDS)
        if S(row.state) in UNDER_WAY:
            raise busy()
        return self._settled(row, clock.now())

    def _settled(self, row: BookingRow, now: datetime) -> BookingView:
        """A confirmation's answer from a booking no longer held."""
        view = BookingView.of(row, now)
        state = S(row.state)
        if state in CHARGED:
            return view  # a retried confirmation
        if state in (S.CANCELLED, S.CANCELLING):
            raise cancelled_meanwhile()
        if state is S.RELEASED and row.outcome:
            raise FailedPrecondition(
                row.outcome, "booking", f"{row.outcome}: the confirmation was refused"
            )
        raise FailedPrecondition(
            RuleCode.HOLD_EXPIRED, "booking", "HOLD_EXPIRED: the hold lapsed or was given up"
        )
