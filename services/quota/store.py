"""Reads and writes of the quota tables inside one transaction.

Account rows are locked in one sorted order everywhere (kind, owner, year),
so that concurrent transactions never deadlock on them; on SQLite every
transaction holds the database's write lock from BEGIN instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.quota import orm
from services.quota.domain import AccountKey, AccountKind, Balance, Totals
from services.runtime import clock


class QuotaStore:
    def __init__(self, session: AsyncSession, actor: str) -> None:
        self.session = session
        self.actor = actor

    async def lock_accounts(self, keys: Iterable[AccountKey]) -> dict[AccountKey, orm.Account]:
        """Locks and returns the existing accounts among `keys`, in sorted order."""
        wanted = sorted(set(keys), key=lambda k: (k.kind.value, k.owner_id, k.fiscal_year))
        query = (
            select(orm.Account)
            .where(
                tuple_(orm.Account.kind, orm.Account.owner_id, orm.Account.fiscal_year).in_(
                    [(k.kind.value, k.owner_id, k.fiscal_year) for k in wanted]
                )
            )
            .order_by(orm.Account.kind, orm.Account.owner_id, orm.Account.fiscal_year)
            .with_for_update()
        )
        rows = (await self.session.scalars(query)).all()
        return {
            AccountKey(AccountKind(row.kind), row.owner_id, row.fiscal_year): row for row in rows
        }

    async def get_account(self, key: AccountKey, lock: bool = False) -> orm.Account | None:
        if lock:
            return (await self.lock_accounts([key])).get(key)
        return await self.session.get(orm.Account, (key.kind.value, key.owner_id, key.fiscal_year))

    def open_account(
        self,
        key: AccountKey,
        entitled: int,
        reason: str,
        reference: str,
        staff_category: str | None = None,
        ledger_kind: str = "OPEN",
    ) -> orm.Account:
        account = orm.Account(
            kind=key.kind.value,
            owner_id=key.owner_id,
            fiscal_year=key.fiscal_year,
            entitled=0,
            held=0,
            spent=0,
            staff_category=staff_category,
        )
        self.session.add(account)
        self.change(key, account, ledger_kind, reference, reason, entitled=entitled)
        return account

    def change(
        self,
        key: AccountKey,
        account: orm.Account,
        kind: str,
        reference: str,
        reason: str = "",
        *,
        entitled: int = 0,
        held: int = 0,
        spent: int = 0,
        at: datetime | None = None,
    ) -> None:
        """Applies one change to an account's totals and writes its ledger entry."""
        account.entitled += entitled
        account.held += held
        account.spent += spent
        self.session.add(
            orm.LedgerEntry(
                recorded_at=at or clock.now(),
                account_kind=key.kind.value,
                account_owner=key.owner_id,
                fiscal_year=key.fiscal_year,
                kind=kind,
                delta_entitled=entitled,
                delta_held=held,
                delta_spent=spent,
                actor=self.actor,
                reason=reason,
                reference=reference,
            )
        )

    async def agency(self, agency_id: str) -> orm.Agency | None:
        return await self.session.get(orm.Agency, agency_id)

    async def idempotency(self, operation: str, key: str) -> orm.IdempotencyRecord | None:
        return await self.session.get(orm.IdempotencyRecord, (operation, key))

    def remember(self, operation: str, key: str, fingerprint: str, result_id: str) -> None:
        self.session.add(
            orm.IdempotencyRecord(
                operation=operation,
                key=key,
                fingerprint=fingerprint,
                result_id=result_id,
                created_at=clock.now(),
            )
        )


def request_fingerprint(command: object) -> str:
    """A digest of a request's fields: the same request always gives the
    same one (fields are plain values, datetimes and account keys)."""
    if is_dataclass(command) and not isinstance(command, type):
        command = tuple(getattr(command, field.name) for field in fields(command))
    return hashlib.sha256(repr(command).encode()).hexdigest()


def balance_of(key: AccountKey, account: orm.Account) -> Balance:
    return Balance(key, Totals(account.entitled, account.held, account.spent))


def totals_of(account: orm.Account) -> Totals:
    return Totals(account.entitled, account.held, account.spent)
