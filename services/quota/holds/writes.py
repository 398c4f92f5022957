"""What a batch writes back: accounts, holds and ledger entries; on
PostgreSQL in one statement (a data-modifying CTE over arrays)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.quota.holds.work import ACCOUNTS, HOLDS, LEDGER, Batch

log = logging.getLogger("eap.quota")


_MOVED_COLUMNS = (
    "provider_id",
    "hourly_rate_ntd",
    "session_start",
    "session_month",
    "fiscal_year",
    "iso_week",
    "booking_ref",
)


async def write(connection: AsyncConnection, work: Batch) -> None:
    """Writes what the batch changed: accounts, holds and ledger entries."""
    if connection.dialect.name == "postgresql":
        await _write_postgres(connection, work)
    else:
        await _write_portable(connection, work)
    if work.moved_holds:
        await connection.execute(
            update(HOLDS)
            .where(HOLDS.c.hold_id == bindparam("k_hold"))
            .values({name: bindparam(f"v_{name}") for name in _MOVED_COLUMNS}),
            [
                {"k_hold": hold_id, **{f"v_{name}": h[name] for name in _MOVED_COLUMNS}}
                for hold_id, h in work.moved_holds.items()
            ],
        )


async def _write_portable(connection: AsyncConnection, work: Batch) -> None:
    new_accounts = [a for a in work.accounts.values() if a.new]
    if new_accounts:
        await connection.execute(
            ACCOUNTS.insert(),
            [
                {
                    "kind": a.key.kind.value,
                    "owner_id": a.key.owner_id,
                    "fiscal_year": a.key.fiscal_year,
                    "entitled": a.entitled,
                    "held": a.held,
                    "spent": a.spent,
                    "staff_category": a.staff_category,
                }
                for a in new_accounts
            ],
        )
    changed = [a for a in work.accounts.values() if a.dirty and not a.new]
    if changed:
        await connection.execute(
            update(ACCOUNTS)
            .where(
                ACCOUNTS.c.kind == bindparam("k_kind"),
                ACCOUNTS.c.owner_id == bindparam("k_owner"),
                ACCOUNTS.c.fiscal_year == bindparam("k_year"),
            )
            .values(
                entitled=bindparam("v_entitled"),
                held=bindparam("v_held"),
                spent=bindparam("v_spent"),
            ),
            [
                {
                    "k_kind": a.key.kind.value,
                    "k_owner": a.key.owner_id,
                    "k_year": a.key.fiscal_year,
                    "v_entitled": a.entitled,
                    "v_held": a.held,
                    "v_spent": a.spent,
                }
                for a in changed
            ],
        )
    if work.new_holds:
        await connection.execute(HOLDS.insert(), work.new_holds)
    inserted = {h["hold_id"] for h in work.new_holds}
    changed_holds = [h for i, h in work.dirty_holds.items() if i not in inserted]
    if changed_holds:
        await connection.execute(
            update(HOLDS)
            .where(HOLDS.c.hold_id == bindparam("k_hold"))
            .values(
                state=bindparam("v_state"),
                minutes=bindparam("v_minutes"),
                amount_ntd=bindparam("v_amount"),
                outcome=bindparam("v_outcome"),
                charge=bindparam("v_charge"),
            ),
            [
                {
                    "k_hold": h["hold_id"],
                    "v_state": h["state"],
                    "v_minutes": h["minutes"],
                    "v_amount": h["amount_ntd"],
                    "v_outcome": h["outcome"],
                    "v_charge": h["charge"],
                }
                for h in changed_holds
            ],
        )
    if work.entries:
        await connection.execute(LEDGER.insert(), work.entries)


# Everything a batch writes, in one statement on PostgreSQL: five
# data-modifying CTEs fed by arrays. One round trip instead of five, and one
# SQL text whatever the batch's size, so it is prepared once per connection.
_HOLD_COLUMNS = (
    ("hold_id", "text"),
    ("employee_id", "text"),
    ("agency_id", "text"),
    ("provider_id", "text"),
    ("staff_category", "text"),
    ("fiscal_year", "int"),
    ("session_month", "int"),
    ("iso_week", "text"),
    ("session_start", "timestamptz"),
    ("hourly_rate_ntd", "bigint"),
    ("minutes", "int"),
    ("amount_ntd", "bigint"),
    ("group_size", "int"),
    ("group_index", "int"),
    ("state", "text"),
    ("expires_at", "timestamptz"),
    ("booking_ref", "text"),
    ("created_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("fingerprint", "text"),
    ("outcome", "text"),
    ("charge", "text"),
)
_LEDGER_COLUMNS = (
    ("recorded_at", "timestamptz"),
    ("account_kind", "text"),
    ("account_owner", "text"),
    ("fiscal_year", "int"),
    ("kind", "text"),
    ("delta_entitled", "bigint"),
    ("delta_held", "bigint"),
    ("delta_spent", "bigint"),
    ("actor", "text"),
    ("reason", "text"),
    ("reference", "text"),
)
_NEW_ACCOUNT_TYPES = ("text", "text", "int", "bigint", "bigint", "bigint", "text")
_ACCOUNT_TYPES = ("text", "text", "int", "bigint", "bigint", "bigint")
_HOLD_CHANGE_TYPES = ("text", "text", "int", "bigint", "text", "text")


def _arrays(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(types))


def _postgres_write_sql() -> str:
    n_new, n_acc, n_hold = len(_NEW_ACCOUNT_TYPES), len(_ACCOUNT_TYPES), len(_HOLD_COLUMNS)
    at_acc = 1 + n_new
    at_hold = at_acc + n_acc
    at_change = at_hold + n_hold
    at_ledger = at_change + len(_HOLD_CHANGE_TYPES)
    hold_names = ", ".join(name for name, _ in _HOLD_COLUMNS)
    ledger_names = ", ".join(name for name, _ in _LEDGER_COLUMNS)
    return f"""
WITH new_accounts AS (
  INSERT INTO quota_accounts (kind, owner_id, fiscal_year, entitled, held, spent, staff_category)
  SELECT * FROM unnest({_arrays(1, _NEW_ACCOUNT_TYPES)})
  RETURNING 1
), changed_accounts AS (
  UPDATE quota_accounts AS a
  SET entitled = v.entitled, held = v.held, spent = v.spent
  FROM unnest({_arrays(at_acc, _ACCOUNT_TYPES)})
    AS v(kind, owner_id, fiscal_year, entitled, held, spent)
  WHERE a.kind = v.kind AND a.owner_id = v.owner_id AND a.fiscal_year = v.fiscal_year
  RETURNING 1
), new_holds AS (
  INSERT INTO quota_holds ({hold_names})
  SELECT * FROM unnest({_arrays(at_hold, [kind for _, kind in _HOLD_COLUMNS])})
  RETURNING 1
), changed_holds AS (
  UPDATE quota_holds AS h
  SET state = v.state, minutes = v.minutes, amount_ntd = v.amount_ntd,
      outcome = v.outcome, charge = v.charge
  FROM unnest({_arrays(at_change, _HOLD_CHANGE_TYPES)})
    AS v(hold_id, state, minutes, amount_ntd, outcome, charge)
  WHERE h.hold_id = v.hold_id
  RETURNING 1
), entries AS (
  INSERT INTO quota_ledger ({ledger_names})
  SELECT * FROM unnest({_arrays(at_ledger, [kind for _, kind in _LEDGER_COLUMNS])})
  RETURNING 1
)
SELECT (SELECT count(*) FROM new_accounts), (SELECT count(*) FROM changed_accounts),
       (SELECT count(*) FROM new_holds), (SELECT count(*) FROM changed_holds),
       (SELECT count(*) FROM entries)
"""


_POSTGRES_WRITE = _postgres_write_sql()


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into one list per column (what unnest takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def _write_postgres(connection: AsyncConnection, work: Batch) -> None:
    new = [
        (
            a.key.kind.value,
            a.key.owner_id,
            a.key.fiscal_year,
            a.entitled,
            a.held,
            a.spent,
            a.staff_category,
        )
        for a in work.accounts.values()
        if a.new
    ]
    changed = [
        (a.key.kind.value, a.key.owner_id, a.key.fiscal_year, a.entitled, a.held, a.spent)
        for a in work.accounts.values()
        if a.dirty and not a.new
    ]
    holds = [tuple(h[name] for name, _ in _HOLD_COLUMNS) for h in work.new_holds]
    inserted = {h["hold_id"] for h in work.new_holds}
    hold_changes = [
        (h["hold_id"], h["state"], h["minutes"], h["amount_ntd"], h["outcome"], h["charge"])
        for hold_id, h in work.dirty_holds.items()
        if hold_id not in inserted
    ]
    entries = [tuple(e[name] for name, _ in _LEDGER_COLUMNS) for e in work.entries]
    parameters = (
        *_columns(new, len(_NEW_ACCOUNT_TYPES)),
        *_columns(changed, len(_ACCOUNT_TYPES)),
        *_columns(holds, len(_HOLD_COLUMNS)),
        *_columns(hold_changes, len(_HOLD_CHANGE_TYPES)),
        *_columns(entries, len(_LEDGER_COLUMNS)),
    )
    await connection.exec_driver_sql(_POSTGRES_WRITE, parameters)
