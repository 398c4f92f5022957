"""The check across services (`eapctl verify`): the matcher's bookings and
the quota's ledger tell one story.

- every booked or completed session carries exactly one committed charge
  (a quota hold booked or completed, naming the booking), of the session's
  cost (rules.cost, a group place's share of it) and minutes;
- every committed charge belongs to such a session;
- nobody has more sessions in an ISO week than the weekly limit;
- no provider is over its cap and no agency over its budget, and every
  balance equals its ledger (the quota's own check).

A booking with a step under way (booking.state.UNDER_WAY) is between the
two stories and is left out, with its charge; the reconciler settles it.
Problems name rows by booking and hold id only: no person.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.matcher.booking.state import CHARGED, UNDER_WAY, BookingState
from services.matcher.orm import BookingRow
from services.quota import orm as quota_orm
from services.quota.domain import HoldState, Share
from services.quota.ledger_reads import LedgerReads
from services.rules.codes import RuleCode
from services.rules.cost import session_cost_ntd
from services.rules.office_time import iso_week
from services.rules.sessions import WEEKLY_SESSION_LIMIT

COMMITTED = (HoldState.BOOKED.value, HoldState.COMPLETED.value)


@dataclass(frozen=True)
class Problem:
    rule: str
    row: str  # "booking <id>", "hold <id>", or an account's subject
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.row}: {self.detail}"


async def check(matcher: AsyncEngine, quota: AsyncEngine) -> list[Problem]:
    async with matcher.connect() as connection:
        bookings = (await connection.execute(select(BookingRow.__table__))).all()
    async with quota.connect() as connection:
        holds = (
            await connection.execute(
                select(quota_orm.Hold.__table__).where(quota_orm.Hold.state.in_(COMMITTED))
            )
        ).all()
    problems: list[Problem] = []
    charges = defaultdict(list)
    for hold in holds:
        charges[hold.booking_ref].append(hold)
    by_id = {b.booking_id: b for b in bookings}

    weeks: dict[tuple[str, str], list[str]] = defaultdict(list)
    for booking in bookings:
        state = BookingState(booking.state)
        if state in UNDER_WAY or state not in CHARGED:
            continue
        weeks[(booking.employee_id, iso_week(booking.start).label)].append(booking.booking_id)
        own = charges.get(booking.booking_id, [])
        row = f"booking {booking.booking_id}"
        if not own:
            problems.append(Problem("UNCHARGED", row, f"{state} without a committed charge"))
            continue
        if len(own) > 1:
            ids = ", ".join(sorted(h.hold_id for h in own))
            problems.append(Problem("CHARGED_TWICE", row, f"{len(own)} committed charges: {ids}"))
        for hold in own:
            expected = Share(hold.group_size, hold.group_index).of(
                session_cost_ntd(hold.hourly_rate_ntd, hold.minutes)
            )
            if hold.amount_ntd != expected or hold.minutes != booking.minutes:
                problems.append(
                    Problem(
                        "WRONG_CHARGE",
                        f"hold {hold.hold_id}",
                        f"charges {hold.minutes} min, NT${hold.amount_ntd}; the session of "
                        f"{row} is {booking.minutes} min, NT${expected}",
                    )
                )
    for ref, charged in charges.items():
        paid_for = by_id.get(ref)
        if paid_for is not None and BookingState(paid_for.state) in CHARGED | UNDER_WAY:
            continue
        for hold in charged:
            what = "no booking" if paid_for is None else f"a booking {paid_for.state}"
            problems.append(
                Problem("CHARGE_WITHOUT_SESSION", f"hold {hold.hold_id}", f"charges {what}")
            )
    for (_, week), week_ids in sorted(weeks.items(), key=lambda item: item[1]):
        # A group session's places are one session each for their own
        # employee: two places of one employee in a week break the rule too.
        if len(week_ids) > WEEKLY_SESSION_LIMIT:
            problems.append(
                Problem(
                    RuleCode.WEEKLY_LIMIT,
                    "bookings " + ", ".join(sorted(week_ids)),
                    f"one employee's {len(week_ids)} sessions in ISO week {week}",
                )
            )
    for line in await LedgerReads(quota).verify():
        subject, _, detail = line.partition(": ")
        problems.append(Problem("LEDGER", subject, detail))
    return problems
