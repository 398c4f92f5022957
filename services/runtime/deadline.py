"""The deadline of the call being served, for code that must decide whether
its work can still finish in time (the quota's admission control) without
holding the call's gRPC context."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("eap_call_deadline", default=None)


def set_remaining(seconds: float | None) -> None:
    """The call being served must be answered within `seconds` (None: no deadline)."""
    _deadline.set(None if seconds is None else asyncio.get_running_loop().time() + seconds)


def remaining() -> float | None:
    """Seconds until the call being served is past its deadline; None when it has none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - asyncio.get_running_loop().time()
