"""eapctl as HR and operators run it: subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests import replicas

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


def test_demo_tells_the_whole_story() -> None:
    demo = subprocess.run([EAPCTL, "demo"], capture_output=True, text=True, timeout=180)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    out = demo.stdout
    for line in (
        "[SLOT_TAKEN]",  # a second person on a held slot
        "HR applies it:",  # the optimized job booked its result
        "HTML report:",
        "[WEEKLY_LIMIT]",
        "[AGENCY_BUDGET]",
        "[EMPLOYEE_ENTITLEMENT]",
        "Demo finished; the suite shut down cleanly.",
    ):
        assert line in out, line
    assert "Traceback" not in demo.stderr


SUBMIT = ("--time-limit", "1", "--watch")


def test_match_jobs_from_the_command_line(tmp_path: Path) -> None:
    port = replicas.free_port()
    env = {
        **os.environ,
        "EAP_GRPC_ADDRESS": f"127.0.0.1:{port}",
        "EAP_METRICS_PORT": "-1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'eap.db'}",
        "EAP_AUTH_MODE": "dev",
    }
    env.pop("REDIS_URL", None)
    server = subprocess.Popen(
        [EAPCTL, "serve", "all"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            submitted = subprocess.run(
                [EAPCTL, "match", "submit", *("--start", "2027-03-08", "--weeks", "1"), *SUBMIT],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            if submitted.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the server is still starting
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        assert "done" in submitted.stderr  # the progress bar reached the end
        result = subprocess.run(
            [EAPCTL, "match", "result", job_id, "-o", str(tmp_path / "r.json")],
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0 and "0 sessions" in result.stdout, result.stderr
        assert json.loads((tmp_path / "r.json").read_text())["job"]["jobId"] == job_id
        dry = subprocess.run(
            [EAPCTL, "match", "apply", job_id, "--dry-run"], capture_output=True, text=True, env=env
        )
        assert dry.stdout.startswith("would book 0 sessions"), dry.stderr
        unknown = subprocess.run(
            [EAPCTL, "match", "result", "nope"], capture_output=True, text=True, env=env
        )
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    finally:
        server.terminate()
        server.wait(20)
