"""One transaction's working set: the rows it read and locked, and what it
will write back."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table

from services.quota import orm
from services.quota.domain import (
    AccountKey,
    Balance,
    Totals,
)

log = logging.getLogger("eap.quota")


ACCOUNTS = cast(Table, orm.Account.__table__)
HOLDS = cast(Table, orm.Hold.__table__)
LEDGER = cast(Table, orm.LedgerEntry.__table__)


@dataclass
class Account:
    """An account's totals inside one batch; written back if `dirty`."""

    key: AccountKey
    entitled: int
    held: int
    spent: int
    staff_category: str | None
    new: bool = False
    dirty: bool = False

    @property
    def totals(self) -> Totals:
        return Totals(self.entitled, self.held, self.spent)

    def view(self) -> Balance:
        return Balance(self.key, self.totals)


def account_pk(key: AccountKey) -> tuple[str, str, int]:
    return (key.kind.value, key.owner_id, key.fiscal_year)


@dataclass
class Batch:
    """What one transaction read, and what it will write."""

    now: datetime
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty_holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_holds: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[AccountKey, Account] = field(default_factory=dict)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)  # holds by idempotency key
    organisations: dict[str, str] = field(default_factory=dict)
    rates: dict[tuple[str, int], int] = field(default_factory=dict)
    policies: dict[tuple[str, str, int], int] = field(default_factory=dict)
    taken_weeks: set[tuple[str, str]] = field(default_factory=set)
    entries: list[dict[str, Any]] = field(default_factory=list)
    moved_holds: dict[str, dict[str, Any]] = field(default_factory=dict)  # rare: own UPDATE

    def change(
        self,
        account: Account,
        kind: str,
        reference: str,
        actor: str,
        reason: str = "",
        *,
        entitled: int = 0,
        held: int = 0,
        spent: int = 0,
    ) -> None:
        account.entitled += entitled
        account.held += held
        account.spent += spent
        account.dirty = True
        self.entries.append(
            {
                "recorded_at": self.now,
                "account_kind": account.key.kind.value,
                "account_owner": account.key.owner_id,
                "fiscal_year": account.key.fiscal_year,
                "kind": kind,
                "delta_entitled": entitled,
                "delta_held": held,
                "delta_spent": spent,
                "actor": actor,
                "reason": reason,
                "reference": reference,
            }
        )

    def touch(self, hold: dict[str, Any]) -> None:
        self.dirty_holds[hold["hold_id"]] = hold
