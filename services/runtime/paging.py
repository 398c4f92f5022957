"""Opaque page tokens: the last key of a page, so the next page starts after it."""

from __future__ import annotations

import base64

from services.runtime.errors import InvalidArgument


def page_token(last_key: str | int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_key}".encode()).decode()


def after(token: str) -> str | None:
    """The key a page token points after; None for the first page."""
    if not token:
        return None
    try:
        prefix, _, key = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except ValueError:
        prefix, key = "", ""
    # No key of ours holds a NUL (and PostgreSQL's text cannot).
    if prefix != "after" or "\x00" in key:
        raise InvalidArgument.single("page_token", "not a token this service gave")
    return key


def page_size(requested: int, default: int, largest: int) -> int:
    if not 0 <= requested <= largest:
        raise InvalidArgument.single("page_size", f"0 (meaning {default}) to {largest}")
    return requested or default
