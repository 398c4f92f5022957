"""The funding rules, free of storage and transport.

The rules themselves (session length, the weekly limit, the ISO week, the
fiscal year, a session's cost, the rule codes) live in `services.rules`;
here they are applied to accounts and holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.rules.codes import RuleCode
from services.rules.cost import Share
from services.rules.office_time import fiscal_year_of
from services.rules.sessions import SESSION_LENGTH_TEXT, session_length_ok
from services.runtime.errors import FailedPrecondition
from services.runtime.fields import FieldChecker

MAX_HOLD_TTL_SECONDS = 86_400
MAX_GROUP_SIZE = 30


class AccountKind(StrEnum):
    EMPLOYEE = "employee"
    PROVIDER = "provider"
    AGENCY = "agency"


class HoldState(StrEnum):
    HELD = "held"
    BOOKED = "booked"
    COMPLETED = "completed"
    RELEASED = "released"
    EXPIRED = "expired"


# The holds that charge a session: what the usage summaries count and what
# every booked or completed session must carry exactly one of.
CHARGING_STATES = (HoldState.BOOKED.value, HoldState.COMPLETED.value)


@dataclass(frozen=True)
class AccountKey:
    kind: AccountKind
    owner_id: str
    fiscal_year: int

    @property
    def subject(self) -> str:
        """How refusals name the account: employees stay anonymous."""
        if self.kind is AccountKind.EMPLOYEE:
            return f"employee/{self.fiscal_year}"
        return f"{self.kind.value}/{self.owner_id}/{self.fiscal_year}"


@dataclass
class Totals:
    entitled: int
    held: int
    spent: int

    @property
    def left(self) -> int:
        return self.entitled - self.held - self.spent


UNITS = {
    AccountKind.EMPLOYEE: "minutes",
    AccountKind.PROVIDER: "minutes",
    AccountKind.AGENCY: "ntd",
}


@dataclass(frozen=True)
class Balance:
    """An account's totals at one moment."""

    key: AccountKey
    totals: Totals
    # HR's view (disclosure.py): non-zero when the totals are rounded down to
    # bands this wide, not exact; `through_month` the last month they count.
    band: int = 0
    through_month: int = 0

    @property
    def unit(self) -> str:
        return UNITS[self.key.kind]


def check_share(checker: FieldChecker, share: Share, field: str) -> None:
    checker.require(
        2 <= share.size <= MAX_GROUP_SIZE, f"{field}.size", f"2 to {MAX_GROUP_SIZE} participants"
    )
    checker.require(0 <= share.index < share.size, f"{field}.index", "0 to size - 1")


def current_fiscal_year(now: datetime) -> int:
    return fiscal_year_of(now)


def check_session_minutes(checker: FieldChecker, minutes: int, field: str) -> None:
    checker.require(session_length_ok(minutes), field, SESSION_LENGTH_TEXT)


def check_fiscal_year(checker: FieldChecker, year: int, field: str) -> None:
    checker.require(2000 <= year <= 2200, field, "a fiscal year between 2000 and 2200")


def require_room(key: AccountKey, totals: Totals, amount: int) -> None:
    """Refuses when `amount` does not fit in what the account has left."""
    if amount <= totals.left:
        return
    rule, unit = {
        AccountKind.EMPLOYEE: (RuleCode.EMPLOYEE_ENTITLEMENT, "minutes"),
        AccountKind.PROVIDER: (RuleCode.PROVIDER_CAP, "minutes"),
        AccountKind.AGENCY: (RuleCode.AGENCY_BUDGET, "ntd"),
    }[key.kind]
    raise FailedPrecondition(
        rule,
        key.subject,
        f"{rule.value}: needs {amount} {unit}, {max(totals.left, 0)} left",
        left={f"left_{unit}": str(totals.left), f"needed_{unit}": str(amount)},
    )
