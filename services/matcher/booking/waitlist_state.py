"""A waitlist entry's life, as one state machine: its states, the
transitions allowed, and the one way to take a step, a compare-and-set.

    waiting ──offer made──► offered ──offer confirmed──► booked
       │  ▲                   │
       │  └─lapsed/declined───┤ (the slot is never offered to it again)
       │                      ├──► lapsed (MAX_LAPSES offers not taken)
       ├──► lapsed (its window passed)
       └──► left ◄────────────┘ (left the list, withdrew, or booked another way)

An offer is made in one transaction with its slot's hold (waitlist_offers.py):
the entry's compare-and-set from `waiting` to `offered` on the version it
was read at, so two replicas offering to one case at once make one offer;
the slot's hold, under the counselor's row lock, so one slot goes to one
case. The entry follows its offer's booking (a booking's state is the
truth): confirmed, it is `booked`; released (lapsed or declined), it waits
again or gives up.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.booking.waitlist_rows import WaitlistRow


class EntryState(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    BOOKED = "booked"
    LEFT = "left"
    LAPSED = "lapsed"


E = EntryState

TRANSITIONS: dict[EntryState, frozenset[EntryState]] = {
    E.WAITING: frozenset({E.OFFERED, E.LEFT, E.LAPSED}),
    E.OFFERED: frozenset({E.BOOKED, E.WAITING, E.LAPSED, E.LEFT}),
    E.BOOKED: frozenset(),
    E.LEFT: frozenset(),
    E.LAPSED: frozenset(),
}
LIVE = frozenset({E.WAITING, E.OFFERED})


class IllegalTransition(AssertionError):
    """A step the table does not allow: a bug in the caller, never input."""


async def step(
    session: AsyncSession,
    entry_id: str,
    source: EntryState | frozenset[EntryState],
    target: EntryState,
    now: datetime,
    version: int | None = None,
    **values: object,
) -> bool:
    """Moves the entry from `source` to `target` (setting `values`) if and
    only if it is in `source` now, and, given `version`, unchanged since it
    was read at that version: one UPDATE, so of two callers racing for one
    step exactly one wins. `target` equal to the one source state changes
    the entry in place (a requeue moving it up). Returns whether this
    caller won."""
    sources = source if isinstance(source, frozenset) else frozenset({source})
    for state in sources:
        if target is not state and target not in TRANSITIONS[state]:
            raise IllegalTransition(f"{state} -> {target}")
    where = [WaitlistRow.entry_id == entry_id, WaitlistRow.state.in_([s.value for s in sources])]
    if version is not None:
        where.append(WaitlistRow.version == version)
    result = await session.execute(
        update(WaitlistRow)
        .where(*where)
        .values(state=target.value, version=WaitlistRow.version + 1, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
