"""SQLAlchemy engines and Alembic migrations, the same way for every service.

PostgreSQL (asyncpg) in production; a SQLite file (aiosqlite) as the embedded
default. Callers give plain `postgresql://` or `sqlite:///` URLs; the async
driver is chosen here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from alembic import command
from alembic.config import Config
from redis.asyncio import Redis
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_url(url: str) -> str:
    parsed = make_url(url)
    backend = parsed.drivername.split("+")[0]
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite:///")
    return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)


def padded(values: Collection[T]) -> list[T]:
    """`values` repeated up to the next power of two (at least one; empty
    stays empty). An IN list's length is part of its SQL text, and every new
    text costs a compile and a server-side prepare; this way a statement has
    a handful of texts, all cached, whatever the batch size."""
    items = list(values)
    if not items:
        return items
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[0]] * (size - len(items))


def is_unavailable(error: BaseException) -> bool:
    """The database could not be reached or gave no connection in time: the
    caller may retry later (UNAVAILABLE), nothing was done."""
    if isinstance(error, SATimeoutError | ConnectionError):
        return True
    if isinstance(error, DBAPIError):
        text = f"{type(error.orig).__name__} {error.orig}".lower()
        return error.connection_invalidated or any(
            marker in text
            for marker in (
                "toomanyconnections",
                "connection refused",
                "cannot connect",
                "connection is closed",
                "unable to open database",
            )
        )
    return False


def is_retryable(error: DBAPIError) -> bool:
    """Deadlocks, serialization failures and a busy SQLite: worth running the
    transaction again."""
    text = str(error.orig).lower()
    return any(
        marker in text
        for marker in ("deadlock", "could not serialize", "database is locked", "busy")
    )


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect = partial(_connect_sqlite, database or ":memory:")
        engine = create_async_engine(url, async_creator=connect, hide_parameters=True)
        _serialize_sqlite_writers(engine)
        return engine
    # hide_parameters: statement values (employee ids among them) stay out of
    # error messages and so out of logs.
    # Writes go through one batch at a time per service, so a few connections
    # serve a busy replica; replicas x 2 x pool_size must stay under the
    # server's max_connections.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=10, hide_parameters=True
    )


class _SQLiteConnection(aiosqlite.Connection):
    """aiosqlite's connection, with a stop() that may be called twice.

    When a task is cancelled in a query, SQLAlchemy closes its connection in a
    shielded task and, if cancelled again meanwhile, stops it at once; close()
    then calls stop() itself and waits for a worker thread that the first stop
    already ended. That task never ends, and the event loop's close waits on
    it for ever (aiosqlite 0.22; a test run hung there, see
    tests/runtime/test_database.py). A second stop() waits on the first.
    """

    _stopping: asyncio.Future[Any] | None = None
    _stop_requested = False

    def stop(self) -> asyncio.Future[Any] | None:
        if not self._stop_requested:
            self._stop_requested = True
            self._stopping = super().stop()
        return self._stopping


async def _connect_sqlite(database: str) -> aiosqlite.Connection:
    connection = _SQLiteConnection(partial(sqlite3.connect, database, timeout=30), 64)
    connection._thread.daemon = True  # as SQLAlchemy makes it: never hold the process at exit
    return await connection


def _serialize_sqlite_writers(engine: AsyncEngine) -> None:
    """SQLite has no row locks: every transaction takes the write lock at BEGIN
    (BEGIN IMMEDIATE), so a read-check-write is atomic across processes too.
    This is SQLAlchemy's documented recipe for taking over pysqlite's BEGIN."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def scope_of(url: str) -> str:
    """A short name for one database, so that services on different databases
    sharing one Redis keep their leases apart."""
    rendered = make_url(url).render_as_string(hide_password=True)
    return f"{zlib.crc32(rendered.encode()):08x}"


async def probe_stores(engine: AsyncEngine, redis: Redis | None) -> dict[str, bool]:
    """Whether the database (and Redis, where the service uses it) answers."""
    stores = {}
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        stores["database"] = True
    except Exception:
        stores["database"] = False
    if redis is not None:
        try:
            stores["redis"] = bool(await redis.ping())
        except Exception:
            stores["redis"] = False
    return stores


async def migrate(
    engine: AsyncEngine,
    migrations: Path,
    version_table: str,
    attributes: Mapping[str, object] | None = None,
) -> None:
    """Brings the service's tables to the newest revision. `attributes` go
    to the migrations (`audit.migration_attributes`: the audit keys, which
    sign a trail's head).

    On PostgreSQL an advisory lock keeps replicas that start together from
    racing; SQLite's BEGIN IMMEDIATE does the same there.
    """
    async with engine.begin() as connection:
        if not is_sqlite(engine):
            lock_id = zlib.crc32(version_table.encode())
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        await connection.run_sync(_upgrade, migrations, version_table, attributes or {})


def alembic_config(migrations: Path, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["version_table"] = version_table
    return config


def _upgrade(
    connection: Connection,
    migrations: Path,
    version_table: str,
    attributes: Mapping[str, object],
) -> None:
    config = alembic_config(migrations, version_table)
    config.attributes.update(attributes)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def run_migrations_in_env(target_metadata: Any, version_table: str) -> None:
    """The body of every service's Alembic env.py.

    `migrate()` hands over an open connection; the `alembic` command line
    (for writing new revisions) gets one from DATABASE_URL.
    """
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        import os

        from sqlalchemy import create_engine as create_sync_engine

        url = os.environ.get("DATABASE_URL", "sqlite:///./var/eap.sqlite3")
        with create_sync_engine(url).begin() as sync_connection:
            _configure_and_run(context, sync_connection, target_metadata, version_table)
        return
    _configure_and_run(context, connection, target_metadata, version_table)


def _configure_and_run(
    context: Any, connection: Connection, target_metadata: Any, version_table: str
) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
