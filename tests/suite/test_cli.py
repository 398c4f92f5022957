"""eapctl as HR and operators run it: subprocesses, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from services.quota import orm as quota_orm
from services.quota.disclosure import MIN_CELL_PEOPLE
from services.runtime.auth import Authenticator, Role
from services.runtime.config import Settings
from tests import replicas

EAPCTL = str(Path(sys.executable).with_name("eapctl"))
DATA = Path(__file__).resolve().parents[2] / "services" / "cli" / "data"


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


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    demo = subprocess.run(
        [EAPCTL, "demo", "--keep"], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    out = demo.stdout
    kept = re.search(r"SQLite at (\S+)", out)
    assert kept, out[:500]
    database = Path(kept.group(1))
    try:
        _no_small_group_in_metrics(tmp_path / "var", database)
    finally:
        shutil.rmtree(database.parent)
    for line in (
        "[SLOT_TAKEN]",  # a second person on a held slot
        "HR applies it:",  # the optimized job booked its result
        "HTML report:",
        "[WEEKLY_LIMIT]",
        "[AGENCY_BUDGET]",
        "[EMPLOYEE_ENTITLEMENT]",
        "booked Tue 20 Apr 13:30: 5 places; refused: none",  # a group session
        "10 places took 3 h of the provider's cap, not 15 h",
        "withheld: fewer than 5 people",  # the usage summary's small cells
        "emp-2b7e asks for K-1002, someone else's: NOT_FOUND",
        "received (case-",
        "); nothing else comes back",
        "people directory: 15 employees",
        "Connect JSON, POST /eap.matcher.v1.MatcherService/ListCounselors: HTTP 200",
        "gRPC-Web, /eap.calendar.v1.CalendarService/ListOfficeDays: HTTP 200",
        "one from elsewhere may not (None)",
        "chain intact",
        "/: 員工協助方案諮商預約",  # the booking page, served by the edge
        "Demo finished; the suite shut down cleanly.",
    ):
        assert line in out, line
    assert re.search(r"The booking page was at http://127\.0\.0\.1:\d+/", out.splitlines()[-1])
    assert "Traceback" not in demo.stderr
    _no_personal_data_in_logs_or_metrics(tmp_path / "var", demo.stderr)


def _no_small_group_in_metrics(var: Path, database: Path) -> None:
    """Acceptance 4 of issue 14: no series of the demo's metrics names an
    agency or provider that fewer than MIN_CELL_PEOPLE distinct employees
    stand behind (booked or completed sessions in the year), counted here
    from the demo's own database."""
    metrics = (var / "demo-metrics.prom").read_text(encoding="utf-8")
    with sqlite3.connect(database) as db:
        people = {
            (kind, owner, str(year)): int(n)
            for kind in ("agency", "provider")
            for owner, year, n in db.execute(
                f"SELECT {kind}_id, fiscal_year, COUNT(DISTINCT employee_id) "
                f"FROM {quota_orm.Hold.__tablename__} WHERE state IN ('booked', 'completed') "
                f"GROUP BY {kind}_id, fiscal_year"
            )
        }
    small = {owner for (_, owner, _), n in people.items() if n < MIN_CELL_PEOPLE}
    assert small, people  # the demo has small agencies and providers: the check is real
    shown = set()
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            named = set(sample.labels.values()) & small
            assert not named, f"{sample.name}{sample.labels} names a group under five"
            for kind in ("agency", "provider"):
                if kind in sample.labels:
                    key = (kind, sample.labels[kind], sample.labels.get("fiscal_year", ""))
                    assert people.get(key, 0) >= MIN_CELL_PEOPLE, (sample.name, sample.labels)
                    shown.add(sample.labels[kind])
    assert shown, "no balance series at all: the scan saw nothing"


def _no_personal_data_in_logs_or_metrics(var: Path, stderr: str) -> None:
    """Acceptance: after the demo, the services' logs and metrics name no
    one: no employee id, name, phone number or e-mail address in clear."""
    logs = (var / "demo-services.log").read_text(encoding="utf-8")
    metrics = (var / "demo-metrics.prom").read_text(encoding="utf-8")
    assert '"rpc refused"' in logs and "grpc_server_handled_total" in metrics  # real output
    county = json.loads((DATA / "sample_county.json").read_text(encoding="utf-8"))
    employees = (
        {c["employee"] for key in ("cases", "open_cases", "group_cases") for c in county[key]}
        | set(county["people"])
        | {"emp-7a30"}
    )
    personal = set(employees)
    for person in county["people"].values():
        personal |= {person["name"], person["phone"], person["email"]}
    for name, text in (("logs", logs), ("metrics", metrics), ("stderr", stderr)):
        found = sorted(p for p in personal if p in text)
        assert found == [], f"{name} name {found}"
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text), f"an e-mail address in {name}"
        assert not re.search(r"\b09\d{2}-?\d{3}-?\d{3}\b", text), f"a mobile number in {name}"


SUBMIT = ("--start", "2027-03-08", "--weeks", "1", "--time-limit", "1", "--watch")


def test_match_jobs_from_the_command_line(tmp_path: Path) -> None:
    with replicas.embedded(tmp_path) as (_, env):
        submitted = subprocess.run(
            [EAPCTL, "match", "submit", *SUBMIT],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
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


HEADER = (
    "counselor_id,provider_id,display_name,specialties,modalities,location,"
    "max_sessions_per_day,weekly_hours\n"
)


def test_import_counselors_from_csv(tmp_path: Path) -> None:
    good = tmp_path / "counselors.csv"
    good.write_bytes(
        (
            HEADER
            + "C-100,P1,林美華,psychological;family,in_person;video,屏東 3F,5,"
            + "Mon 09:00-12:00; Mon 13:30-17:00; Wed 18:00-21:00\n"
            + "C-101,P2,Chen Ya-ting,legal,in_person,Donggang,4,Wed 09:00-12:00\n"
        ).encode("big5")  # as Excel saves it in Taiwan
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "C-200,P1,X,astrology,in_person,,5,Mon 09:00-12:00\n"
        + "C-201,P1,Y,legal,,,0,Someday\n"
        + "C-100,P1,Z,legal,video,,3,Tue 09:00-10:00\n"
    )
    with replicas.embedded(tmp_path) as (_, env):
        refused = subprocess.run(
            [EAPCTL, "match", "import-counselors", str(bad)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert refused.returncode == 1
        for problem in (
            "line 2: specialties[0]: a known category",
            "line 3: weekly_hours: 'Someday'",
            "line 3: modalities: at least one",
            "line 3: max_sessions_per_day: 1 to 12",
            "nothing was imported",
        ):
            assert problem in refused.stderr, refused.stderr
        for _ in range(2):  # a second run replaces what the first created
            imported = subprocess.run(
                [EAPCTL, "match", "import-counselors", str(good)],
                capture_output=True,
                text=True,
                env=env,
            )
            assert imported.returncode == 0, imported.stderr
        assert imported.stdout.strip() == "0 counselors created, 2 replaced"


def test_tokens_are_minted_in_development_only(tmp_path: Path) -> None:
    env = {**os.environ, "EAP_AUTH_MODE": "dev"}
    env.pop("EAP_JWT_KEYS_DIR", None)
    mint = [EAPCTL, "token", "mint", "--role", "employee", "--subject", "emp-1"]
    minted = subprocess.run(mint, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert minted.returncode == 0, minted.stderr
    settings = Settings.from_env({"EAP_JWT_KEYS_DIR": str(tmp_path / "var" / "dev-keys")})
    identity = Authenticator(settings).identify(
        (("authorization", f"Bearer {minted.stdout.strip()}"),)
    )
    assert (identity.subject, identity.role) == ("emp-1", Role.EMPLOYEE)
    production = {
        **env,
        "EAP_AUTH_MODE": "jwt",
        "EAP_JWT_KEYS_DIR": str(tmp_path / "var/dev-keys"),
        "EAP_ALLOW_PLAINTEXT": "true",
    }
    refused = subprocess.run(mint, capture_output=True, text=True, cwd=tmp_path, env=production)
    assert refused.returncode == 2 and "only for development" in refused.stderr
    assert not refused.stdout
