"""What a batch reads and locks, in the one global lock order: hold rows by
id, then account rows by (kind, owner, year)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from services.quota import orm
from services.quota.domain import (
    AccountKey,
    AccountKind,
    HoldState,
)
from services.quota.holds.requests import CommitOp, MoveOp, Op, ReleaseOp, ReserveOp, hold_keys
from services.quota.holds.work import ACCOUNTS, HOLDS, Account, Batch, account_pk
from services.quota.reference import ReferenceData
from services.rules.office_time import iso_week
from services.runtime.database import padded

log = logging.getLogger("eap.quota")


async def read(
    connection: AsyncConnection, work: Batch, batch: Sequence[Op], reference: ReferenceData
) -> None:
    """Reads and locks everything the batch's requests may touch."""
    reserves = [op for op in batch if isinstance(op, ReserveOp)]
    moves = [op for op in batch if isinstance(op, MoveOp)]
    hold_ids = {op.hold_id for op in batch if isinstance(op, CommitOp | ReleaseOp | MoveOp)}

    keys_wanted = {op.idempotency_key for op in reserves}
    weeks = {(op.employee_id, iso_week(op.session_start).label) for op in reserves}
    weeks |= {(op.employee_id, op.week) for op in moves}
    if hold_ids or reserves:
        # One read locks the holds to commit or release, finds the holds that
        # earlier tries of these reservations made, and the active holds
        # that already take the weeks asked for. (A week booked by a batch
        # still in flight elsewhere is caught by the unique index instead.)
        hold_rows = await _read_holds(connection, hold_ids, keys_wanted, weeks)
        for hold in hold_rows:
            week = (hold["employee_id"], hold["iso_week"])
            if hold["state"] in orm.ACTIVE_HOLD_STATES and week in weeks:
                work.taken_weeks.add(week)
            if hold["hold_id"] in hold_ids or hold["idempotency_key"] in keys_wanted:
                work.holds[hold["hold_id"]] = hold
                if hold["idempotency_key"] in keys_wanted:
                    work.by_key[hold["idempotency_key"]] = hold

    keys = {key for hold in work.holds.values() for key in hold_keys(hold)}
    for move in moves:
        moving = work.holds.get(move.hold_id)
        if moving is not None:
            keys |= set(
                ReserveOp.keys_of(
                    move.employee_id, move.provider_id, moving["agency_id"], move.session_start
                )
            )
    if moves:
        work.rates |= await reference.rates(connection, {(m.provider_id, m.year) for m in moves})
    if reserves:
        keys |= {key for op in reserves for key in op.account_keys()}
        work.organisations = await reference.organisations(
            connection, {op.agency_id for op in reserves}
        )
        work.rates |= await reference.rates(
            connection, {(op.provider_id, op.year) for op in reserves}
        )
        wanted = {
            (work.organisations[op.agency_id], op.staff_category, op.year)
            for op in reserves
            if op.agency_id in work.organisations
        }
        if wanted:
            work.policies = await reference.policies(connection, wanted)
    moved = [(m, work.holds[m.hold_id]) for m in moves if m.hold_id in work.holds]
    if moved:
        # A move into a year the employee has no account for yet opens it by
        # policy, as a reservation would.
        work.organisations |= await reference.organisations(
            connection, {hold["agency_id"] for _, hold in moved}
        )
        wanted = {
            (work.organisations[hold["agency_id"]], hold["staff_category"], m.year)
            for m, hold in moved
            if hold["agency_id"] in work.organisations
        }
        if wanted:
            work.policies |= await reference.policies(connection, wanted)

    if keys:
        work.accounts = await lock_accounts(connection, keys)


async def due_holds(
    connection: AsyncConnection, now: datetime, limit: int, touching: Sequence[AccountKey]
) -> list[dict[str, Any]]:
    query = select(HOLDS).where(HOLDS.c.state == HoldState.HELD.value, HOLDS.c.expires_at <= now)
    if touching:
        column = {
            AccountKind.EMPLOYEE: HOLDS.c.employee_id,
            AccountKind.PROVIDER: HOLDS.c.provider_id,
            AccountKind.AGENCY: HOLDS.c.agency_id,
        }
        query = query.where(
            or_(
                *(
                    and_(column[k.kind] == k.owner_id, HOLDS.c.fiscal_year == k.fiscal_year)
                    for k in touching
                )
            )
        )
    query = query.order_by(HOLDS.c.hold_id).limit(limit)
    if connection.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    return [dict(row._mapping) for row in await connection.execute(query)]


async def _read_holds(
    connection: AsyncConnection,
    hold_ids: set[str],
    keys_wanted: set[str],
    weeks: set[tuple[str, str]],
) -> list[dict[str, Any]]:
    """Locks and returns the holds with these ids or idempotency keys, and the
    active holds of these employee-weeks."""
    if connection.dialect.name == "postgresql":
        # One SQL text with array parameters: no compiling, no IN lists.
        rows = await connection.exec_driver_sql(
            _POSTGRES_READ_HOLDS,
            (
                list(hold_ids),
                list(keys_wanted),
                [employee for employee, _ in weeks],
                [week for _, week in weeks],
            ),
        )
        return [dict(row._mapping) for row in rows]
    rows = await connection.execute(
        select(HOLDS)
        .where(
            or_(
                HOLDS.c.hold_id.in_(padded(hold_ids)),
                HOLDS.c.idempotency_key.in_(padded(keys_wanted)),
                and_(
                    HOLDS.c.state.in_(orm.ACTIVE_HOLD_STATES),
                    tuple_(HOLDS.c.employee_id, HOLDS.c.iso_week).in_(padded(weeks)),
                ),
            )
        )
        .order_by(HOLDS.c.hold_id)
        .with_for_update()
    )
    return [dict(row._mapping) for row in rows]


async def lock_accounts(
    connection: AsyncConnection, keys: Iterable[AccountKey]
) -> dict[AccountKey, Account]:
    if connection.dialect.name == "postgresql":
        wanted = list(keys)
        rows = await connection.exec_driver_sql(
            _POSTGRES_LOCK_ACCOUNTS,
            (
                [key.kind.value for key in wanted],
                [key.owner_id for key in wanted],
                [key.fiscal_year for key in wanted],
            ),
        )
    else:
        columns = (ACCOUNTS.c.kind, ACCOUNTS.c.owner_id, ACCOUNTS.c.fiscal_year)
        rows = await connection.execute(
            select(ACCOUNTS)
            .where(tuple_(*columns).in_(padded({account_pk(key) for key in keys})))
            .order_by(*columns)
            .with_for_update()
        )
    accounts = {}
    for row in rows:
        key = AccountKey(AccountKind(row.kind), row.owner_id, row.fiscal_year)
        accounts[key] = Account(key, row.entitled, row.held, row.spent, row.staff_category)
    return accounts


_ACTIVE = ", ".join(f"'{state}'" for state in orm.ACTIVE_HOLD_STATES)
_POSTGRES_READ_HOLDS = f"""
SELECT {", ".join(HOLDS.c.keys())} FROM quota_holds
WHERE hold_id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])
   OR (state IN ({_ACTIVE})
       AND (employee_id, iso_week) IN (SELECT * FROM unnest($3::text[], $4::text[])))
ORDER BY hold_id
FOR UPDATE
"""
_POSTGRES_LOCK_ACCOUNTS = """
SELECT kind, owner_id, fiscal_year, entitled, held, spent, staff_category FROM quota_accounts
WHERE (kind, owner_id, fiscal_year) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))
ORDER BY kind, owner_id, fiscal_year
FOR UPDATE
"""
