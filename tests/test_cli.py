"""eapctl as HR and operators run it: subprocesses, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EAPCTL = str(Path(sys.executable).with_name("eapctl"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EAPCTL, *args], capture_output=True, text=True, timeout=120)


def test_match_generate_baseline_verify(tmp_path: Path) -> None:
    instance = tmp_path / "s1.json"
    schedule = tmp_path / "s1.greedy.json"
    generated = run("match", "generate", "--scale", "S", "--seed", "1")
    assert generated.returncode == 0, generated.stderr
    instance.write_text(generated.stdout)
    booked = run("match", "baseline", str(instance))
    assert booked.returncode == 0, booked.stderr
    schedule.write_text(booked.stdout)
    verdict = run("match", "verify", str(instance), str(schedule))
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    summary = json.loads(verdict.stdout)
    assert summary["feasible"] and summary["sessions"] > 0


def test_match_verify_reports_an_unreadable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "eap-match-instance/1", "cases": 3}')
    verdict = run("match", "verify", str(broken), str(broken))
    assert verdict.returncode == 2
    assert "Traceback" not in verdict.stderr
