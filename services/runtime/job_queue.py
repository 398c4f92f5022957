"""A job queue in a database table, for work that any replica may run:
match jobs, plan jobs. A row is queued, then running on one replica (its
`worker`) while that replica keeps `heartbeat_at` moving, then done or
failed. A running row whose heartbeat stopped is taken over by another
replica, at most `MAX_ATTEMPTS` times in all.

Rows are claimed with SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL, so
replicas never take the same job; SQLite's BEGIN IMMEDIATE serialises the
claim there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.runtime import clock

HEARTBEAT = timedelta(seconds=2)
STALE_AFTER = timedelta(seconds=30)  # no heartbeat this long: the replica died
MAX_ATTEMPTS = 3
POLL_SECONDS = 0.5

Row = TypeVar("Row")
log = logging.getLogger("eap.jobs")


async def claim(session: AsyncSession, row_type: type[Row], worker: str) -> Row | None:
    """Takes the oldest queued (or abandoned) row for `worker`, inside the
    caller's transaction; None when there is none to take."""
    table: Any = row_type
    now = clock.now()
    row: Any = await session.scalar(
        select(table)
        .where(
            or_(
                table.state == "queued",
                and_(table.state == "running", table.heartbeat_at < now - STALE_AFTER),
            )
        )
        .order_by(table.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if row is None:
        return None
    if row.attempts >= MAX_ATTEMPTS:
        row.state = "failed"
        row.error = f"the replicas running it stopped {row.attempts} times"
        return None
    if row.state == "running":
        log.warning("job taken over", extra={"table": table.__tablename__})
    row.state, row.worker, row.heartbeat_at = "running", worker, now
    row.attempts += 1
    return row  # type: ignore[no-any-return]


async def run_forever(run_one: Callable[[], Awaitable[bool]], what: str) -> None:
    """Runs jobs one at a time, polling when there is none; a failure (a
    store down, which the health probe reports) is logged and retried."""
    while True:
        try:
            ran = await run_one()
        except Exception:
            log.warning("%s runner failed", what, exc_info=True)
            ran = False
        if not ran:
            await asyncio.sleep(POLL_SECONDS)
