"""The services' notion of now, in one place so tests can move it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

_offset = timedelta()


def now() -> datetime:
    return datetime.now(UTC) + _offset


def advance(delta: timedelta) -> None:
    """Moves this process's clock forward (tests of expiry)."""
    global _offset
    _offset += delta


@contextlib.contextmanager
def moved_to(moment: datetime) -> Iterator[None]:
    """Runs the block with this process's clock set going from `moment`
    (tests of dates to come), then puts it back."""
    global _offset
    before = _offset
    _offset += moment - now()
    try:
        yield
    finally:
        _offset = before
