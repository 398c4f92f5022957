"""The check across services: the matcher's sessions and the quota's
charges tell one story.

- every funded session (booked, completed, or missed or cancelled late
  and charged: the booking's `funded`) carries exactly one charge (a quota
  hold booked or completed, naming the booking), of the session's cost
  (rules.cost; a group place's share of it; nothing where the charge of a
  missed session does not pay the provider) and minutes;
- every charge belongs to such a session;
- nobody has more sessions in an ISO week than the weekly limit.

A booking with a step under way (state.UNDER_WAY) is between the two
stories and is left out, with its charge: the reconciler settles it. So is
a booking the caller says changed too recently to judge (`unsettled`), and
a charge for a session that retention may have purged (`purged_before`).
Problems name rows by booking and hold id only: no person.

The comparison is pure; `eapctl verify` feeds it rows read from both
databases, the matcher's watch (watch.py) its own rows and the quota's
ListCharges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.matcher.booking.state import CHARGED, UNDER_WAY, BookingState
from services.rules.attendance import Attendance
from services.rules.codes import RuleCode
from services.rules.cost import Share, session_cost_ntd
from services.rules.office_time import iso_week
from services.rules.sessions import WEEKLY_SESSION_LIMIT

# The problems the check can find, as they are counted in metrics.
UNCHARGED = "UNCHARGED"
CHARGED_TWICE = "CHARGED_TWICE"
WRONG_CHARGE = "WRONG_CHARGE"
CHARGE_WITHOUT_SESSION = "CHARGE_WITHOUT_SESSION"
KINDS = (
    UNCHARGED,
    CHARGED_TWICE,
    WRONG_CHARGE,
    CHARGE_WITHOUT_SESSION,
    RuleCode.WEEKLY_LIMIT.value,
)


@dataclass(frozen=True)
class Session:
    """A booking as the matcher stores it."""

    booking_id: str
    state: BookingState
    employee_id: str
    start: datetime
    minutes: int
    funded: bool  # the quota holds a charge for it (BookingRow.funded)
    attendance: str = ""  # rules.attendance.Attendance

    @property
    def charged(self) -> bool:
        """Whether the quota should hold a charge for it: a session booked
        or completed (unless it was missed and charged nothing), or one
        cancelled late and charged."""
        if not self.funded or self.state in UNDER_WAY:
            return False
        late = self.attendance == Attendance.LATE_CANCELLATION
        return self.state in CHARGED or (self.state is BookingState.CANCELLED and late)


@dataclass(frozen=True)
class Charge:
    """A booked or completed quota hold."""

    hold_id: str
    booking_ref: str
    minutes: int
    amount_ntd: int
    hourly_rate_ntd: int
    group_size: int = 1
    group_index: int = 0
    session_start: datetime | None = None
    pays_provider: bool = True  # false for a missed session charged otherwise

    @property
    def expected_ntd(self) -> int:
        """What the hold should charge for its minutes: the session's cost,
        or this place's share of a group session's; nothing where it does
        not pay the provider."""
        if not self.pays_provider:
            return 0
        cost = session_cost_ntd(self.hourly_rate_ntd, self.minutes)
        return Share(self.group_size, self.group_index).of(cost)


@dataclass(frozen=True)
class Problem:
    rule: str
    row: str  # "booking <id>", "hold <id>", or an account's subject
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.row}: {self.detail}"


def compare(
    sessions: Iterable[Session],
    charges: Iterable[Charge],
    unsettled: Set[str] = frozenset(),
    purged_before: datetime | None = None,
) -> list[Problem]:
    """Every way the sessions and the charges disagree. `unsettled` names
    bookings changed too recently to judge (their charges are left out
    too); charges of sessions that ended before `purged_before` may have
    lost their booking to retention and are not missed."""
    by_ref: dict[str, list[Charge]] = defaultdict(list)
    for charge in charges:
        by_ref[charge.booking_ref].append(charge)
    by_id = {s.booking_id: s for s in sessions}
    problems: list[Problem] = []
    weeks: dict[tuple[str, str], list[str]] = defaultdict(list)
    for session in by_id.values():
        if not session.charged:
            continue
        weeks[(session.employee_id, iso_week(session.start).label)].append(session.booking_id)
        if session.booking_id in unsettled:
            continue
        problems.extend(_charged_once(session, by_ref.get(session.booking_id, [])))
    for ref, charged in by_ref.items():
        paid_for = by_id.get(ref)
        if ref in unsettled or (
            paid_for is not None and (paid_for.charged or paid_for.state in UNDER_WAY)
        ):
            continue
        for charge in charged:
            if paid_for is None and _maybe_purged(charge, purged_before):
                continue
            what = "no booking" if paid_for is None else f"a booking {paid_for.state}"
            problems.append(
                Problem(CHARGE_WITHOUT_SESSION, f"hold {charge.hold_id}", f"charges {what}")
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
    return problems


def _charged_once(session: Session, charges: list[Charge]) -> Iterable[Problem]:
    row = f"booking {session.booking_id}"
    if not charges:
        yield Problem(UNCHARGED, row, f"{session.state} without a committed charge")
        return
    if len(charges) > 1:
        ids = ", ".join(sorted(c.hold_id for c in charges))
        yield Problem(CHARGED_TWICE, row, f"{len(charges)} committed charges: {ids}")
    for charge in charges:
        if charge.amount_ntd != charge.expected_ntd or charge.minutes != session.minutes:
            yield Problem(
                WRONG_CHARGE,
                f"hold {charge.hold_id}",
                f"charges {charge.minutes} min, NT${charge.amount_ntd}; the session of "
                f"{row} is {session.minutes} min, NT${charge.expected_ntd}",
            )


def _maybe_purged(charge: Charge, purged_before: datetime | None) -> bool:
    if purged_before is None or charge.session_start is None:
        return False
    return charge.session_start + timedelta(minutes=charge.minutes) < purged_before
