"""The SQLite connection's shutdown: however SQLAlchemy's graceful close and
force stop of a cancelled query's connection interleave, both end.

With aiosqlite's own connection, close() racing stop() waited for ever on a
worker thread the stop had ended; asyncio.run()'s shutdown then waited on
that task, and a test run hung in its event loop's close."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from services.runtime import database


@pytest.mark.parametrize("stop_first", [False, True])
async def test_close_and_stop_together_both_end(tmp_path: Path, stop_first: bool) -> None:
    for _ in range(20):
        connection = await database._connect_sqlite(str(tmp_path / "eap.db"))
        if stop_first:
            connection.stop()  # SQLAlchemy's force close came first
        closing = asyncio.ensure_future(connection.close())  # its shielded graceful close
        await asyncio.sleep(0)
        connection.stop()
        await asyncio.wait([closing], timeout=5)
        assert closing.done(), "close() waits for a worker thread that has ended"
        if stop_first:  # a close after a stop has nothing to do, or is refused
            assert closing.exception() is None or isinstance(closing.exception(), ValueError)
        else:
            assert closing.exception() is None
        connection._thread.join(5)
        assert not connection._thread.is_alive()


async def test_the_engine_reads_and_writes_through_it(tmp_path: Path) -> None:
    engine = database.create_engine(f"sqlite:///{tmp_path}/eap.db")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (n INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1), (2)"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT sum(n) FROM t"))).scalar() == 3
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            assert mode == "wal"
            timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar()
            assert timeout == 30000
    finally:
        await engine.dispose()
