"""The databases the tests run on: real PostgreSQL and Redis, and what
happens without them, and SQLite files.

A missing server skips the tests that need it with the reason, except under
CI=true, where it fails them: CI must never pass by skipping.

Every service's migrations run once per test process, into a template that
each test's database is copied from (PostgreSQL's CREATE DATABASE ...
TEMPLATE; a file copy for SQLite): running them per test was a good part of
`make test`'s time. The services still run their migrations when they start,
finding the database at head; the migrations themselves are tested from an
empty database (tests/runtime/test_runtime.py and the `eapctl migrate` of each
replica cluster).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from services.cli import registry
from services.runtime.config import Settings

POSTGRES_URL = os.environ.get("EAP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _redis_url_of_this_process() -> str:
    """Redis database 15 (or the one EAP_TEST_REDIS_URL names), counting down
    for each pytest-xdist worker: tests empty it, and rate limits and leases
    live in it, so parallel test processes must not share one."""
    url = os.environ.get("EAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    parsed = urlparse(url)
    number = int(parsed.path.strip("/") or 0) - int(worker.removeprefix("gw"))
    return parsed._replace(path=f"/{number}").geturl()


REDIS_URL = _redis_url_of_this_process()


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), 2):
            return True
    except OSError:
        return False


def require(what: str, url: str, default_port: int) -> None:
    if _reachable(url, default_port):
        return
    reason = f"{what} is not reachable at {url} (start it: see README, 'Tests')"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def _migrate_every_service(url: str) -> None:
    """As `eapctl migrate` does, on a thread of its own: the caller may be
    inside a running event loop."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, registry.migrate_all(Settings(database_url=url))).result()


def _database_url(name: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(statement)


@functools.cache
def _postgres_template() -> str:
    """A database with every service's tables and no rows, dropped when the
    test process ends."""
    name = f"eap_template_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    atexit.register(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _migrate_every_service(_database_url(name))
    return name


@contextmanager
def fresh_postgres_database(migrated: bool = True) -> Iterator[str]:
    """A new database on the test server, with every service's tables (or
    none, when not `migrated`); dropped afterwards."""
    require("PostgreSQL", POSTGRES_URL, 5432)
    name = f"eap_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_postgres_template()}"' if migrated else ""
    _admin(f'CREATE DATABASE "{name}"{template}')
    try:
        yield _database_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@functools.cache
def _sqlite_template() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="eap-template-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "eap.db"
    _migrate_every_service(f"sqlite:///{path}")
    return path


def migrated_sqlite(path: Path) -> str:
    """The URL of a new SQLite file at `path` with every service's tables."""
    shutil.copyfile(_sqlite_template(), path)
    return f"sqlite:///{path}"


def redis_url() -> str:
    require("Redis", REDIS_URL, 6379)
    return REDIS_URL


async def sign_audit_heads(url: str, keys_file: Path) -> None:
    """The audit trails' heads signed with `keys_file`'s first key, as
    `eapctl migrate` under that key signs them. The templates are migrated
    under the development key, which a suite with keys of its own rightly
    takes for someone else's (services/runtime/audit.py)."""
    from sqlalchemy import select, update

    from services.runtime.audit import AuditKeys, signed_head, tables
    from services.runtime.database import create_engine

    keys = AuditKeys.load(str(keys_file), development=False)
    trails = [
        s.name
        for s in registry.own_stores(registry.build(list(registry.SERVICES)))
        if getattr(s, "audited", False)
    ]
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for trail in trails:
                _, head = tables(trail)
                last_seq, last_hash = (
                    await connection.execute(select(head.c.last_seq, head.c.last_hash))
                ).one()
                signed = signed_head(trail, last_seq, last_hash, keys)
                await connection.execute(
                    update(head).values(key_id=signed.key_id, signature=signed.signature)
                )
    finally:
        await engine.dispose()
