"""Structured JSON logs, one object a line, carrying the request id.

Log calls pass only ids of requests, holds and accounts of institutions
(agencies, providers) and rule names; never a person's data. The request id
travels in a context variable so that every line a call writes carries it.
No line passes MAX_LINE_BYTES: longer fields are cut in their middle, marked.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
MAX_LINE_BYTES = 4096
MIN_FIELD_BYTES = 64  # below this a field says nothing; the line is shortened otherwise
_MARKER = " [...{:,} bytes cut...] "
_MARKER_BYTES = len(_MARKER.format(10**12).encode())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info and record.exc_info[0] is not None:
            # The type and the stack, never the message: a database error's
            # message quotes the row it choked on, personal data and all.
            kind, _, trace = record.exc_info
            entry["exc"] = kind.__qualname__ + "\n" + "".join(traceback.format_tb(trace))
        return capped(entry)


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=str, ensure_ascii=False)


def capped(entry: dict[str, Any]) -> str:
    """`entry` as one JSON line of at most MAX_LINE_BYTES of UTF-8: collectors
    split or drop longer lines (and a stack 1,000 frames deep, or a field
    quoting a whole request, is no use to an operator at full length), so
    the longest fields give way first, each cut in its middle."""
    line = _line(entry)
    if len(line.encode()) <= MAX_LINE_BYTES:
        return line
    texts = {
        key: value if isinstance(value, str) else _line(value)
        for key, value in entry.items()
        if not isinstance(value, bool | int | float | None)
    }

    def with_texts(cut: dict[str, str]) -> str:
        return _line({key: cut.get(key, value) for key, value in entry.items()})

    # What the line takes besides the texts' contents: keys, quotes, commas
    # and a marker in each; escapes ("\n" for a newline) may still widen
    # a cut text, so the budget shrinks until the line fits.
    overhead = len(with_texts(dict.fromkeys(texts, "")).encode())
    budget = MAX_LINE_BYTES - overhead - len(texts) * _MARKER_BYTES
    sizes = {key: len(text.encode()) for key, text in texts.items()}
    while budget >= MIN_FIELD_BYTES * len(texts):
        shares = _shares(sizes, budget)
        line = with_texts({key: _cut(text, shares[key]) for key, text in texts.items()})
        if len(line.encode()) <= MAX_LINE_BYTES:
            return line
        budget = budget * 3 // 4
    # Too many fields to share the line: what happened, and that more was said.
    short: dict[str, Any] = {
        key: _cut(str(entry[key]), MIN_FIELD_BYTES)
        for key in ("ts", "level", "logger", "request_id")
        if key in entry
    }
    short["msg"] = _cut(str(entry.get("msg", "")), 1024)
    short["truncated"] = True
    return _line(short)


def _shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Bytes for each text: the short ones whole, the rest of the budget in
    equal parts to the long ones."""
    shares: dict[str, int] = {}
    left = dict(sizes)
    while left:
        equal = budget // len(left)
        fitting = {key: size for key, size in left.items() if size <= equal}
        if not fitting:
            shares.update(dict.fromkeys(left, equal))
            break
        shares.update(fitting)
        budget -= sum(fitting.values())
        for key in fitting:
            del left[key]
    return shares


def _cut(text: str, limit: int) -> str:
    """`text` within `limit` bytes of UTF-8 (the marker besides), its start
    and end kept: a stack's last frames say the most."""
    data = text.encode()
    if len(data) <= limit:
        return text
    head = data[: limit // 2].decode(errors="ignore")
    tail = data[len(data) - (limit - limit // 2) :].decode(errors="ignore")
    return f"{head}{_MARKER.format(len(data) - limit)}{tail}"


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (SQL echo, connection pools) is not for operators.
    for noisy in ("sqlalchemy", "alembic", "asyncio", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
