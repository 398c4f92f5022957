"""A booking's life, as one state machine: the states, the transitions
allowed between them, and the one way to take a step, a compare-and-set.

    held ──► confirming ──► booked ──► completing ──► completed
      │          │  │         │ ▲            │
      │          │  │         │ └────────────┘ (the quota refused)
      │          │  │         ├──► moving ──► cancelled (moved to another slot)
      │          │  │         │      └──► booked (the move was refused)
      │          │  └──► cancelling ◄──┘ (cancelled) ──► cancelled
      ▼          ▼
    released ◄───┘ (lapsed, given up, or refused by the quota)

Every step of the quota saga starts with a transition into a state that
says who owns it: the caller whose compare-and-set moved the booking from
`held` to `confirming` is the only one that reserves and commits its quota;
a second ConfirmBooking finds `confirming` and waits for the outcome instead
of racing it. A state that is neither stable nor terminal (confirming,
moving, completing, cancelling) is a step under way; one older than a
minute was cut short by a crash, and the reconciler finishes it, every
step being idempotent at the quota service.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.notices.writer import NoticeKind, tell
from services.matcher.orm import BookingRow


class BookingState(StrEnum):
    HELD = "held"
    CONFIRMING = "confirming"
    BOOKED = "booked"
    MOVING = "moving"
    COMPLETING = "completing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    RELEASED = "released"


S = BookingState

TRANSITIONS: dict[BookingState, frozenset[BookingState]] = {
    S.HELD: frozenset({S.CONFIRMING, S.RELEASED}),
    S.CONFIRMING: frozenset({S.BOOKED, S.RELEASED, S.CANCELLING}),
    S.BOOKED: frozenset({S.MOVING, S.COMPLETING, S.CANCELLING}),
    S.MOVING: frozenset({S.BOOKED, S.CANCELLED}),
    S.COMPLETING: frozenset({S.COMPLETED, S.BOOKED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.RELEASED: frozenset(),
}

# Steps under way: the quota service may or may not have done its part yet.
UNDER_WAY = frozenset({S.CONFIRMING, S.MOVING, S.COMPLETING, S.CANCELLING})
# What blocks the counselor's and the employee's time (a held one only until
# it lapses): a confirmation under way must not lose its slot to a new hold.
LIVE = (S.HELD, S.CONFIRMING, S.BOOKED, S.MOVING, S.COMPLETING, S.COMPLETED)
# Where the quota service holds this booking's spending.
CHARGED = frozenset({S.BOOKED, S.MOVING, S.COMPLETING, S.COMPLETED})
# How the API shows each state: a step under way shows where it started.
SHOWN: dict[BookingState, str] = {
    S.HELD: "held",
    S.CONFIRMING: "held",
    S.BOOKED: "booked",
    S.MOVING: "booked",
    S.COMPLETING: "booked",
    S.COMPLETED: "completed",
    S.CANCELLING: "cancelled",
    S.CANCELLED: "cancelled",
    S.RELEASED: "released",
}


# What the person hears of a step, written in the step's own transaction
# (notices/writer.py): a session confirmed (or, for a move's new booking,
# changed), and a booked session cancelled.
TOLD: dict[tuple[BookingState, BookingState], NoticeKind] = {
    (S.CONFIRMING, S.BOOKED): NoticeKind.CONFIRMED,
    (S.CANCELLING, S.CANCELLED): NoticeKind.CANCELLED,
}


class IllegalTransition(AssertionError):
    """A step the table does not allow: a bug in the caller, never input."""


async def step(
    session: AsyncSession,
    booking_id: str,
    source: BookingState | frozenset[BookingState],
    target: BookingState,
    now: datetime,
    condition: ColumnElement[bool] | None = None,
    **values: object,
) -> bool:
    """Moves the booking from `source` (one state or any of several) to
    `target`, setting `values` too, if and only if it is in `source` now:
    one UPDATE ... WHERE state IN (...) (and `condition`), so of two callers
    racing for the same step exactly one wins. Returns whether this caller
    won."""
    sources = source if isinstance(source, frozenset) else frozenset({source})
    for state in sources:
        if target not in TRANSITIONS[state]:
            raise IllegalTransition(f"{state} -> {target}")
    where = [BookingRow.booking_id == booking_id, BookingRow.state.in_([s.value for s in sources])]
    if condition is not None:
        where.append(condition)
    result = await session.execute(
        update(BookingRow)
        .where(*where)
        .values(state=target.value, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    won = bool(result.rowcount)  # type: ignore[attr-defined]
    told = {TOLD[(s, target)] for s in sources if (s, target) in TOLD}
    if won and told:
        row = await session.get(BookingRow, booking_id, populate_existing=True)
        assert row is not None
        for kind in told:
            await tell(session, row, kind, now)
    return won
