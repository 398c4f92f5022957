"""What a caller asks of the hold queue, and what it gets back."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.quota.domain import (
    AccountKey,
    AccountKind,
    Balance,
)
from services.rules.attendance import Attendance, Charge
from services.rules.cost import Share
from services.rules.office_time import fiscal_year_of, iso_week

log = logging.getLogger("eap.quota")


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as it stands after a request; what the API shows of it."""

    hold_id: str
    state: str
    employee_id: str
    agency_id: str
    provider_id: str
    fiscal_year: int
    iso_week: str
    minutes: int
    amount_ntd: int
    expires_at: datetime
    booking_ref: str
    share: Share
    hourly_rate_ntd: int
    session_start: datetime
    outcome: str = ""  # rules.attendance.Attendance, for a session that did not take place
    charge: str = ""  # rules.attendance.Charge, what it was charged

    @property
    def provider_minutes(self) -> int:
        """What the session takes of the provider's hours (nothing for a
        missed session the provider is not paid for)."""
        paid = Charge(self.charge or Charge.FULL).pays_provider
        return self.share.of(self.minutes) if paid else 0

    @classmethod
    def of(cls, hold: dict[str, Any]) -> HoldView:
        return cls(
            hold["hold_id"],
            hold["state"],
            hold["employee_id"],
            hold["agency_id"],
            hold["provider_id"],
            hold["fiscal_year"],
            hold["iso_week"],
            hold["minutes"],
            hold["amount_ntd"],
            hold["expires_at"],
            hold["booking_ref"],
            share_of(hold),
            hold["hourly_rate_ntd"],
            hold["session_start"],
            hold.get("outcome") or "",
            hold.get("charge") or "",
        )


@dataclass(frozen=True)
class Reservation:
    hold: HoldView
    employee: Balance
    provider: Balance
    agency: Balance


@dataclass(eq=False)
class Op:
    actor: str
    future: asyncio.Future[Any]


@dataclass(eq=False)
class ReserveOp(Op):
    idempotency_key: str
    fingerprint: str
    employee_id: str
    agency_id: str
    staff_category: str
    provider_id: str
    session_start: datetime
    minutes: int
    ttl_seconds: int
    booking_ref: str
    share: Share
    validate_only: bool = False  # the answer, nothing held (ReserveRequest.validate_only)

    @property
    def year(self) -> int:
        return fiscal_year_of(self.session_start)

    def account_keys(self) -> tuple[AccountKey, AccountKey, AccountKey]:
        return self.keys_of(self.employee_id, self.provider_id, self.agency_id, self.session_start)

    @staticmethod
    def keys_of(
        employee_id: str, provider_id: str, agency_id: str, session_start: datetime
    ) -> tuple[AccountKey, AccountKey, AccountKey]:
        """The accounts a reservation charges: employee, provider, agency."""
        year = fiscal_year_of(session_start)
        return (
            AccountKey(AccountKind.EMPLOYEE, employee_id, year),
            AccountKey(AccountKind.PROVIDER, provider_id, year),
            AccountKey(AccountKind.AGENCY, agency_id, year),
        )


@dataclass(eq=False)
class CommitOp(Op):
    hold_id: str
    minutes: int
    completed: bool
    # A session that did not take place, and what the tenant charges for it.
    outcome: Attendance = Attendance.ATTENDED
    charge: Charge = Charge.FULL


@dataclass(eq=False)
class ReleaseOp(Op):
    hold_id: str
    reason: str
    booking_cancelled: bool = False


@dataclass(eq=False)
class MoveOp(Op):
    """A booked hold moved to another session of its employee (a reschedule)."""

    hold_id: str
    employee_id: str
    provider_id: str
    session_start: datetime
    minutes: int
    booking_ref: str

    @property
    def year(self) -> int:
        return fiscal_year_of(self.session_start)

    @property
    def week(self) -> str:
        return iso_week(self.session_start).label


def hold_keys(hold: dict[str, Any]) -> tuple[AccountKey, AccountKey, AccountKey]:
    year = hold["fiscal_year"]
    return (
        AccountKey(AccountKind.EMPLOYEE, hold["employee_id"], year),
        AccountKey(AccountKind.PROVIDER, hold["provider_id"], year),
        AccountKey(AccountKind.AGENCY, hold["agency_id"], year),
    )


def share_of(hold: dict[str, Any]) -> Share:
    return Share(hold["group_size"], hold["group_index"])
