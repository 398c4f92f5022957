"""The services' notion of now, in one place so tests can move it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

_offset = timedelta()
FOLLOW_SECONDS = 0.05  # how stale a followed file's offset may be
_followed: Path | None = None
_followed_offset = timedelta()
_followed_at = float("-inf")


def now() -> datetime:
    return datetime.now(UTC) + _offset + _from_file()


def follow(path: str | None) -> None:
    """Development only (EAP_DEV_CLOCK_FILE): this process's clock runs
    ahead by the seconds the file holds, re-read every FOLLOW_SECONDS, so
    that a test can move the clock of replicas running as processes (a
    session completed once it has started). None stops following."""
    global _followed, _followed_offset, _followed_at
    _followed = Path(path) if path else None
    _followed_offset, _followed_at = timedelta(), float("-inf")


def _from_file() -> timedelta:
    global _followed_offset, _followed_at
    if _followed is None:
        return timedelta()
    moment = time.monotonic()
    if moment - _followed_at >= FOLLOW_SECONDS:
        _followed_at = moment
        try:
            _followed_offset = timedelta(seconds=float(_followed.read_text() or 0))
        except FileNotFoundError:
            _followed_offset = timedelta()
        except (OSError, ValueError):
            pass  # written meanwhile: the last offset read stands
    return _followed_offset


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
