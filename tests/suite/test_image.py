"""The container image definition: linted by hadolint, and built the way
the issue asks: multi-stage, protos generated at build, a distroless run
stage (no shell, no package manager, no compiler) as a non-root user, its
entrypoint starting any one service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.cli import registry

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = str(Path(sys.executable).with_name("hadolint"))


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), by stage."""
    lines, pending = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(pending.strip())
            pending = ""
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing() -> None:
    run = subprocess.run(
        [HADOLINT, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_build_generates_protos_and_run_stage_is_bare_and_unprivileged() -> None:
    build, run = _stages()
    assert any("tools/protogen.py" in line for line in build if line.startswith("RUN"))
    assert run[0].startswith("FROM gcr.io/distroless/python3-debian12:nonroot")
    assert not any(line.startswith("RUN") for line in run)  # no shell to run anything with
    assert not any("pip" in line or "apt" in line for line in run)
    user = next(line for line in run if line.startswith("USER ")).split()[1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    entrypoint = json.loads(
        next(line for line in run if line.startswith("ENTRYPOINT")).split(" ", 1)[1]
    )
    command = json.loads(next(line for line in run if line.startswith("CMD")).split(" ", 1)[1])
    assert entrypoint == ["/opt/eap/bin/eapctl", "serve"]
    assert command[0] in registry.SERVICES


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"  # everything out, then what the build needs back in
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in _stages()[0]:
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(p.rstrip("/").removeprefix("./") for p in line.split()[1:-1])
    assert copied == kept
