"""An invitation's life, as one state machine (as booking/state.py is a
booking's), with one step, a compare-and-set:

    open ──(submitted, before its expiry)──► used: the row is deleted
      └──(its week-level expiry passes)────► expired

The state is where the token's hash is kept rather than a column: an open
invitation is a row of matcher_survey_invitations that has not expired; a
used one is no row at all. `use` deletes the row in the caller's
transaction, with the answers written: of two submissions racing with the
same token exactly one deletes it.

Why a used token leaves nothing behind: anything written in the
transaction that keeps the answers shares its transaction id with them
(PostgreSQL's xmin), so a row kept under the token's hash would tie the
answers to the hash, and the hash to the invitation, whose own row was
written with the session's completion. So a used link is answered as an
unknown one (NOT_FOUND), which the survey page words as "answered, or
not a link of ours".
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.survey.rows import InvitationRow


class InvitationState(StrEnum):
    OPEN = "open"
    USED = "used"  # no row: told apart from UNKNOWN only by the submission that used it
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # no invitation of this tenant has this hash (now)


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
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def forget_expired(session: AsyncSession, before: datetime) -> int:
    """Drops invitations that expired before `before`: after that a token
    is simply unknown."""
    result = await session.execute(
        delete(InvitationRow)
        .where(InvitationRow.expires_at < before)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
