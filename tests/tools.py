"""Programs some tests drive (kubectl, Chromium, Prometheus, promtool):
found on PATH, or the test skips saying so, except under CI=true, where a
missing tool fails it: CI must never pass by skipping."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, why: str, override: str = "") -> str:
    """The program's path; `override` names an environment variable that
    may point at it instead."""
    found = (os.environ.get(override) if override else None) or shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed here ({why}; `make test` installs it where it can)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)
