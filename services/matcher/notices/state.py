"""An outbox entry's life, as one state machine (as booking/state.py is a
booking's): the states, the transitions allowed, and the one way to take a
step, a compare-and-set.

    pending ──► sending ──► sent
      │  ▲         │ │
      │  └─────────┘ └──► dead (a permanent refusal, or too many attempts)
      ▼   (failed for now: again after a backoff)
    void (its booking was cancelled or moved before it was due)

`sending` is a lease: the notifier whose compare-and-set took the entry is
the only one delivering it until `lease_until`; a notifier that died
mid-delivery leaves a lease that lapses, and another takes the entry over
(sending -> sending), so every entry is delivered, and by one notifier at
a time. A message sent again after such a crash is the same message (one
Message-ID, one delivery id), which receivers show once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.notices.rows import NoticeRow


class NoticeState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    VOID = "void"


N = NoticeState

TRANSITIONS: dict[NoticeState, frozenset[NoticeState]] = {
    N.PENDING: frozenset({N.SENDING, N.VOID}),
    N.SENDING: frozenset({N.SENT, N.PENDING, N.DEAD, N.SENDING, N.VOID}),
    N.SENT: frozenset(),
    N.DEAD: frozenset({N.PENDING}),  # an operator's retry, once the cause is fixed
    N.VOID: frozenset(),
}


class IllegalTransition(AssertionError):
    """A step the table does not allow: a bug in the caller, never input."""


async def step(
    session: AsyncSession,
    notice_id: str,
    source: NoticeState | frozenset[NoticeState],
    target: NoticeState,
    now: datetime,
    condition: ColumnElement[bool] | None = None,
    **values: object,
) -> bool:
    """Moves the entry from `source` to `target` (setting `values`) if and
    only if it is in `source` now (and `condition` holds): of two notifiers
    racing for the same entry, exactly one wins. Returns whether this one did."""
    sources = source if isinstance(source, frozenset) else frozenset({source})
    for state in sources:
        if target not in TRANSITIONS[state]:
            raise IllegalTransition(f"{state} -> {target}")
    where = [NoticeRow.notice_id == notice_id, NoticeRow.state.in_([s.value for s in sources])]
    if condition is not None:
        where.append(condition)
    result = await session.execute(
        update(NoticeRow)
        .where(*where)
        .values(state=target.value, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
