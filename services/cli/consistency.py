"""`eapctl verify`: the check across services (booking/consistency.py) on
rows read straight from both databases, and the quota's own check that no
provider is over its cap, no agency over its budget, and every balance is
its ledger's sum.

An operator's tool: it reads both services' databases, which no service
does (the matcher's periodic watch asks the quota service instead).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.matcher.booking.consistency import Charge, Problem, Session, compare
from services.matcher.booking.state import BookingState
from services.matcher.orm import BookingRow
from services.quota import orm as quota_orm
from services.quota.domain import CHARGING_STATES
from services.quota.ledger_reads import LedgerReads
from services.rules import attendance

__all__ = ["Problem", "check"]


async def check(
    matcher: AsyncEngine, quota: AsyncEngine, purged_before: datetime | None = None
) -> list[Problem]:
    """Every problem between the sessions and the charges, then the
    ledger's own. Both are read while the suite may be running: a step
    under way is left out (compare's rules), not reported."""
    holds = quota_orm.Hold.__table__
    async with quota.connect() as connection:
        charge_rows = (
            await connection.execute(select(holds).where(holds.c.state.in_(CHARGING_STATES)))
        ).all()
    async with matcher.connect() as connection:
        booking_rows = (await connection.execute(select(BookingRow.__table__))).all()
    sessions = [
        Session(
            b.booking_id,
            BookingState(b.state),
            b.employee_id,
            b.start,
            b.minutes,
            b.funded,
            b.attendance,
        )
        for b in booking_rows
    ]
    charges = [
        Charge(
            h.hold_id,
            h.booking_ref,
            h.minutes,
            h.amount_ntd,
            h.hourly_rate_ntd,
            h.group_size,
            h.group_index,
            h.session_start,
            not h.outcome or attendance.Charge(h.charge).pays_provider,
        )
        for h in charge_rows
    ]
    problems = compare(sessions, charges, purged_before=purged_before)
    for line in await LedgerReads(quota).verify():
        subject, _, detail = line.partition(": ")
        problems.append(Problem("LEDGER", subject, detail))
    return problems
