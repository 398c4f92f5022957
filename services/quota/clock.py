"""The service's notion of now, in one place so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta()


def now() -> datetime:
    return datetime.now(UTC) + _offset


def advance(delta: timedelta) -> None:
    """Moves this process's clock forward (tests of expiry)."""
    global _offset
    _offset += delta
