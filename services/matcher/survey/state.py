"""An invitation's life, as one state machine (as booking/state.py is a
booking's), with one step, a compare-and-set:

    open ──(submitted, before its expiry)──► used
      └──(its week-level expiry passes)────► expired

The state is where the token's hash is kept rather than a column: an open
invitation is a row of matcher_survey_invitations that has not expired; a
used one has left it for matcher_survey_used_tokens, which keeps nothing but
the hash and the expiry, so the keys and the place it held in the table go
with the step (survey/__init__.py says why). `use` deletes the open row
and writes the used one in the caller's transaction, with the answers: of
two submissions racing with the same token exactly one deletes it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.survey.rows import InvitationRow, UsedTokenRow


class InvitationState(StrEnum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # no invitation of this tenant has this hash


S = InvitationState

TRANSITIONS: dict[InvitationState, frozenset[InvitationState]] = {
    S.OPEN: frozenset({S.USED, S.EXPIRED}),
    S.USED: frozenset(),
    S.EXPIRED: frozenset(),
    S.UNKNOWN: frozenset(),
}


async def state_of(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[InvitationState, InvitationRow | None]:
    used = await session.get(UsedTokenRow, token_hash)
    if used is not None:
        return S.USED, None
    row = await session.get(InvitationRow, token_hash)
    if row is None:
        return S.UNKNOWN, None
    return (S.OPEN if now < row.expires_at else S.EXPIRED), row


async def use(session: AsyncSession, row: InvitationRow, now: datetime) -> bool:
    """open -> used, if the invitation is still open now. Returns whether
    this caller took the step."""
    assert S.USED in TRANSITIONS[S.OPEN]
    result = await session.execute(
        delete(InvitationRow)
        .where(InvitationRow.token_hash == row.token_hash, InvitationRow.expires_at > now)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    session.add(UsedTokenRow(token_hash=row.token_hash, expires_at=row.expires_at))
    return True


async def forget_expired(session: AsyncSession, before: datetime) -> int:
    """Drops invitations and used tokens that expired before `before`:
    after that a token is simply unknown."""
    gone = 0
    for table in (InvitationRow, UsedTokenRow):
        result = await session.execute(
            delete(table)
            .where(table.expires_at < before)
            .execution_options(synchronize_session=False)
        )
        gone += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return gone
