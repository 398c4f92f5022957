"""The real PostgreSQL and Redis the tests use, and what happens without them.

A missing server skips the tests that need it with the reason, except under
CI=true, where it fails them: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

POSTGRES_URL = os.environ.get("EAP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("EAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    require("PostgreSQL", POSTGRES_URL, 5432)
    import psycopg

    name = f"eap_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_URL
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url() -> str:
    require("Redis", REDIS_URL, 6379)
    return REDIS_URL
