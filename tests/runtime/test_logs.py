"""Every log line is at most 4 KB of JSON: long fields are cut in their
middle with a marker, the line stays one parseable object, and short
lines are left exactly as they were."""

from __future__ import annotations

import json
import logging
import sys
import tomllib
import traceback
from typing import Any

from services.runtime.logs import MAX_LINE_BYTES, JsonFormatter

LOG = logging.getLogger("eap.test")


def _format(message: str, exc_info: Any = None, **extra: object) -> str:
    record = LOG.makeRecord(
        "eap.test", logging.ERROR, __file__, 1, message, (), exc_info, extra=extra
    )
    return JsonFormatter().format(record)


def test_a_stack_a_thousand_frames_deep_is_logged_in_4_kb() -> None:
    try:  # what a programme nested 10,000 deep once did
        tomllib.loads("deep = " + "[" * 10_000 + "]" * 10_000)
    except RecursionError as error:
        stack = "".join(traceback.format_tb(error.__traceback__))
        exc_info = sys.exc_info()
    assert len(stack) > 100_000  # what the interceptor logged once: 200 KB
    line = _format("unexpected error", exc_info, stack=stack, grpc_method="a/B")
    assert len(line.encode()) <= MAX_LINE_BYTES
    entry = json.loads(line)
    assert entry["msg"] == "unexpected error" and entry["grpc_method"] == "a/B"
    assert entry["level"] == "error" and entry["logger"] == "eap.test"
    # Both ends kept: where the call came in, and the frame that failed.
    assert entry["exc"].startswith("RecursionError\n")
    assert "bytes cut" in entry["stack"] and "bytes cut" in entry["exc"]
    assert entry["stack"].endswith(stack[-200:])


def test_every_long_field_gives_way_and_short_ones_stay_whole() -> None:
    line = _format(
        "x" * 10_000,
        plan="p-123",
        count=7,
        others=["y" * 5_000, "z" * 5_000],
        quoted='"\n' * 3_000,  # JSON writes each as four bytes
        wide="計" * 3_000,  # three bytes each in UTF-8
    )
    assert len(line.encode()) <= MAX_LINE_BYTES
    entry = json.loads(line)
    assert (entry["plan"], entry["count"]) == ("p-123", 7)
    for field in ("msg", "others", "quoted", "wide"):
        assert "bytes cut" in entry[field], field
    assert entry["msg"].startswith("xxx") and entry["msg"].endswith("xxx")
    assert entry["wide"].startswith("計計") and entry["wide"].endswith("計計")


def test_a_line_of_many_fields_still_fits() -> None:
    many = {f"field_{n}": "v" * 100 for n in range(500)}
    line = _format("many fields", **many)
    assert len(line.encode()) <= MAX_LINE_BYTES
    entry = json.loads(line)
    assert entry["msg"] == "many fields" and entry["truncated"] is True


def test_a_short_line_is_written_as_it_was() -> None:
    line = _format("plan queued", plan="p-1", events=3)
    entry = json.loads(line)
    assert "bytes cut" not in line and "truncated" not in entry
    assert (entry["msg"], entry["plan"], entry["events"]) == ("plan queued", "p-1", 3)
