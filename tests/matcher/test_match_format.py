"""The matching benchmark format: loading, the verifier, the greedy baseline
and the generator, checked against the benchmark's independent referee
(../shared/bench) when it is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from services.matcher.optimization import generate as gen
from services.matcher.optimization import verify as verify_cli
from services.matcher.optimization.greedy import solve
from services.matcher.optimization.instance import (
    FormatError,
    Instance,
    Schedule,
    dump_schedule,
    load_instance,
    load_schedule,
)
from services.matcher.optimization.verify import Verdict, verify

BENCH = Path(__file__).resolve().parents[3] / "shared" / "bench"
needs_bench = pytest.mark.skipif(
    not (BENCH / "check_schedule.py").exists(),
    reason=f"the shared benchmark referee is not at {BENCH} (the project works without it)",
)

# The referee's summary keys that say the same thing as ours.
COMPARED = [
    "feasible",
    "sessions",
    "crisis_sessions",
    "crisis_cases_served",
    "crisis_cases",
    "cases_served",
    "cases",
    "continuity_sessions",
    "wait_days",
    "cost_ntd",
    "score",
    "sessions_upper_bound",
    "sessions_budget_bound",
]


def _bench(script: str, *args: str | Path) -> str:
    done = subprocess.run(
        ["python3", str(BENCH / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # check_schedule.py exits 1 on an infeasible schedule; that is an answer
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _referee(instance: Path, schedule: Path) -> dict[str, object]:
    out: dict[str, object] = json.loads(_bench("check_schedule.py", instance, schedule))
    return out


def _ours(instance: Path, schedule: Path) -> dict[str, object]:
    inst = load_instance(instance)
    return verify(inst, load_schedule(schedule, inst)).summary()


# --- (a) agreement with the referee -----------------------------------------------


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def _instance_file(origin: str, seed: int, folder: Path) -> Path:
    path = folder / f"{origin}-S{seed}.json"
    if not path.exists():
        if origin == "shared":
            path.write_text(_bench("gen_instance.py", "--scale", "S", "--seed", str(seed)))
        else:
            _write(path, gen.generate("S", seed))
    return path


def _broken(inst: Instance, schedule: Schedule) -> Schedule:
    """A schedule with a few rule breaks, so that the two verifiers also
    meet on infeasible input: a session moved off the grid, one repeated
    the next week, one handed to an unknown counselor."""
    s = list(schedule.sessions)
    s[0] = replace(s[0], start=s[0].start + timedelta(minutes=10))
    s.append(replace(s[1], start=s[1].start + timedelta(weeks=1)))
    s.append(replace(s[2], counselor="NOBODY"))
    return replace(schedule, sessions=tuple(s))


@needs_bench
@pytest.mark.parametrize("origin", ["shared", "ours"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_verifier_agrees_with_the_referee(origin: str, seed: int, bench_dir: Path) -> None:
    path = _instance_file(origin, seed, bench_dir)
    inst = load_instance(path)
    ours = solve(inst)
    schedules = {
        "our greedy": _write(bench_dir / f"{origin}-{seed}-ours.json", dump_schedule(ours)),
        "shared greedy": bench_dir / f"{origin}-{seed}-shared.json",
        "broken": _write(
            bench_dir / f"{origin}-{seed}-broken.json", dump_schedule(_broken(inst, ours))
        ),
    }
    schedules["shared greedy"].write_text(_bench("baseline_greedy.py", path))
    for label, schedule in schedules.items():
        referee, mine = _referee(path, schedule), _ours(path, schedule)
        differ = {k: (mine[k], referee[k]) for k in COMPARED if mine[k] != referee[k]}
        assert not differ, f"{label} on {origin} S seed {seed}: ours vs referee {differ}"
    assert _ours(path, schedules["our greedy"])["feasible"] is True
    assert _ours(path, schedules["broken"])["feasible"] is False


# --- (b) each hard rule, on a hand-made instance --------------------------------------


def _tiny() -> dict[str, object]:
    """Two weeks, one provider, two counselors, three cases. `_fine()` is a
    schedule that keeps every rule; each test breaks one."""
    tuesdays = [["2027-03-02T09:00", "2027-03-02T17:00"], ["2027-03-09T09:00", "2027-03-09T17:00"]]
    wednesday = [["2027-03-03T09:00", "2027-03-03T12:00"]]

    def case(cid: str, employee: str, **extra: object) -> dict[str, object]:
        return {
            "id": cid,
            "employee": employee,
            "agency": "A1",
            "category": "psychological",
            "kind": "general",
            "sessions": 2,
            "minutes": 60,
            "modalities": ["in_person"],
            "submitted": "2027-02-20T09:00",
            "availability": tuesdays + wednesday,
            "preferred_counselor": None,
            "excluded_counselors": [],
            "employee_remaining_hours": 4,
            **extra,
        }

    def counselor(cid: str, specialties: list[str]) -> dict[str, object]:
        return {
            "id": cid,
            "provider": "P1",
            "specialties": specialties,
            "modalities": ["in_person", "video"],
            "max_sessions_per_day": 3,
            "availability": tuesdays + wednesday,
        }

    return {
        "format": "eap-match-instance/1",
        "name": "tiny",
        "timezone": "Asia/Taipei",
        "horizon": {"start": "2027-03-01", "weeks": 2},
        "slot_minutes": 30,
        "rules": {
            "max_sessions_per_week": 1,
            "min_session_minutes": 60,
            "max_session_minutes": 120,
            "crisis_deadline_hours": 72,
        },
        "weights": {
            "crisis_session": 1000,
            "session": 100,
            "continuity": 10,
            "wait_day": 1,
            "cost_per_kntd": 1,
        },
        "providers": [{"id": "P1", "hourly_rate_ntd": 2000, "hours_cap": 10}],
        "counselors": [counselor("C1", ["psychological"]), counselor("C2", ["legal"])],
        "agencies": [{"id": "A1", "budget_ntd": 20000}],
        "cases": [
            case("K1", "E1"),
            case("K2", "E2", sessions=1, excluded_counselors=["C2"]),
            case("K3", "E3", kind="crisis", sessions=1, submitted="2027-02-27T10:00"),
        ],
    }


def _session(case: str, start: str, counselor: str = "C1", **extra: object) -> dict[str, object]:
    return {
        "case": case,
        "counselor": counselor,
        "start": start,
        "minutes": 60,
        "modality": "in_person",
        **extra,
    }


def _fine() -> list[dict[str, object]]:
    return [
        _session("K1", "2027-03-02T09:00"),
        _session("K1", "2027-03-09T09:00"),
        _session("K2", "2027-03-02T10:00"),
        _session("K3", "2027-03-02T11:00"),
    ]


def _judge(
    instance: dict[str, object], sessions: list[dict[str, object]], tmp_path: Path | None = None
) -> Verdict:
    schedule = {
        "format": "eap-match-schedule/1",
        "instance": "tiny",
        "sessions": sessions,
        "unserved": [],
        "solver": {},
    }
    inst = load_instance(instance)
    verdict = verify(inst, load_schedule(schedule, inst))
    if tmp_path is not None and (BENCH / "check_schedule.py").exists():
        # the referee must see a break wherever we do
        referee = _referee(
            _write(tmp_path / "i.json", instance), _write(tmp_path / "s.json", schedule)
        )
        assert referee["feasible"] == verdict.feasible, referee["violations"]
    return verdict


def _only(verdict: Verdict, rule: int) -> list[str]:
    assert verdict.broken_rules() == {rule}, [str(v) for v in verdict.violations]
    return [str(v) for v in verdict.violations]


def test_the_fine_schedule_keeps_every_rule(tmp_path: Path) -> None:
    verdict = _judge(_tiny(), _fine(), tmp_path)
    assert verdict.feasible and not verdict.warnings
    assert verdict.sessions == 4 and verdict.crisis_sessions == 1


def test_rule_1_counselor_specialty_exclusion_and_modality(tmp_path: Path) -> None:
    wrong_specialty = _fine()
    wrong_specialty[2] = _session("K2", "2027-03-02T10:00", counselor="C2")
    problems = _only(_judge(_tiny(), wrong_specialty, tmp_path), 1)
    assert any("specialty" in p for p in problems)
    assert any("excludes" in p for p in problems)  # K2 also excludes C2
    wrong_modality = _fine()
    wrong_modality[0] = _session("K1", "2027-03-02T09:00", modality="video")
    assert "modality" in _only(_judge(_tiny(), wrong_modality, tmp_path), 1)[0]


def test_rule_2_length_grid_and_availability(tmp_path: Path) -> None:
    off_grid = _fine()
    off_grid[0] = _session("K1", "2027-03-02T12:15")
    assert "grid" in _only(_judge(_tiny(), off_grid, tmp_path), 2)[0]
    past_closing = _fine()
    past_closing[0] = _session("K1", "2027-03-02T16:30")
    problems = _only(_judge(_tiny(), past_closing, tmp_path), 2)
    assert any("counselor's availability" in p for p in problems)
    too_long = _fine()
    too_long[0] = _session("K1", "2027-03-02T12:00", minutes=90)
    assert "case asks for 60" in _only(_judge(_tiny(), too_long, tmp_path), 2)[0]


def test_rule_3_counselor_overlap_and_daily_limit(tmp_path: Path) -> None:
    overlap = _fine()
    overlap[2] = _session("K2", "2027-03-02T09:30")
    assert "double-booked" in _only(_judge(_tiny(), overlap, tmp_path), 3)[0]
    instance = _tiny()
    counselors = instance["counselors"]
    assert isinstance(counselors, list)
    counselors[0]["max_sessions_per_day"] = 2  # K1, K2, K3 all on 2 March
    assert "3 sessions on 2027-03-02" in _only(_judge(instance, _fine(), tmp_path), 3)[0]


def test_rule_4_case_sessions_weekly_limit_and_entitlement(tmp_path: Path) -> None:
    same_week = _fine()
    same_week[1] = _session("K1", "2027-03-03T09:00")
    assert "ISO week 2027-W09" in _only(_judge(_tiny(), same_week, tmp_path), 4)[0]
    too_many = [*_fine(), _session("K2", "2027-03-09T10:00")]
    assert "wants 1" in _only(_judge(_tiny(), too_many, tmp_path), 4)[0]
    instance = _tiny()
    cases = instance["cases"]
    assert isinstance(cases, list)
    # K1 and K2 are one employee with 1.5 hours left: two cases, one week each
    cases[0]["employee_remaining_hours"] = cases[1]["employee_remaining_hours"] = 1.5
    cases[1]["employee"] = "E1"
    two_cases = [s for s in _fine() if s["start"] != "2027-03-09T09:00"]
    two_cases[1] = _session("K2", "2027-03-09T10:00")
    problems = _only(_judge(instance, two_cases, tmp_path), 4)
    assert problems == ["rule 4: employee of cases K1, K2: 2 h booked, entitlement 1.5 h"]


def test_rule_5_provider_hours_cap(tmp_path: Path) -> None:
    instance = _tiny()
    instance["providers"] = [{"id": "P1", "hourly_rate_ntd": 2000, "hours_cap": 3.5}]
    assert "4 h, cap 3.5 h" in _only(_judge(instance, _fine(), tmp_path), 5)[0]


def test_rule_6_agency_budget(tmp_path: Path) -> None:
    instance = _tiny()
    instance["agencies"] = [{"id": "A1", "budget_ntd": 7999}]
    assert "budget 7999" in _only(_judge(instance, _fine(), tmp_path), 6)[0]
    instance["agencies"] = [{"id": "A1", "budget_ntd": 8000}]  # spent to the dollar: kept
    assert _judge(instance, _fine(), tmp_path).feasible


def test_rule_7_crisis_deadline(tmp_path: Path) -> None:
    late = _fine()
    late[3] = _session("K3", "2027-03-09T11:00")
    assert "past the 72 h deadline" in _only(_judge(_tiny(), late, tmp_path), 7)[0]
    instance = _tiny()
    cases = instance["cases"]
    assert isinstance(cases, list)
    # counted from the horizon start for a case submitted before it; the
    # deadline itself is still in time
    cases[2]["availability"] = [["2027-03-04T00:00", "2027-03-04T01:00"]]
    counselors = instance["counselors"]
    assert isinstance(counselors, list)
    counselors[0]["availability"] += [["2027-03-04T00:00", "2027-03-04T01:00"]]
    on_the_dot = [*_fine()[:3], _session("K3", "2027-03-04T00:00")]
    assert _judge(instance, on_the_dot, tmp_path).feasible


def test_objective_terms_on_the_tiny_instance() -> None:
    instance = _tiny()
    cases = instance["cases"]
    assert isinstance(cases, list)
    cases[0]["preferred_counselor"] = "C2"  # anchor: held none of K1's sessions
    verdict = _judge(instance, _fine())
    assert (verdict.crisis_sessions, verdict.other_sessions) == (1, 3)
    assert verdict.continuity_sessions == 0 + 1 + 1
    # from horizon start (all submitted before it) to the first session
    assert verdict.wait_days == Fraction(3 * 24 + 9 + 10 + 11, 24)
    assert verdict.cost_ntd == 8000
    assert verdict.score == 1000 + 300 + 20 - verdict.wait_days - 8
    assert verdict.sessions_upper_bound == 4  # K1 2 (two weeks), K2 1, K3 1
    instance["agencies"] = [{"id": "A1", "budget_ntd": 5000}]
    assert verify(load_instance(instance), Schedule("tiny", ())).sessions_budget_bound == 2


# --- loading ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("cases", 1, "minutes"), "sixty", "cases[1].minutes"),
        (("cases", 0, "submitted"), "2027-2-20T09:00", "cases[0].submitted"),
        (("cases", 0, "kind"), "urgent", "cases[0].kind"),
        (("counselors", 1, "provider"), "P9", "counselors[1].provider"),
        (("counselors", 0, "max_sessions_per_day"), True, "counselors[0].max_sessions_per_day"),
        (
            ("counselors", 0, "availability", 0),
            ["2027-03-02T12:00", "2027-03-02T09:00"],
            "counselors[0].availability[0]",
        ),
        (("horizon", "start"), "2027-03-02", "horizon.start"),
        (("cases", 2, "id"), "K1", "cases[2].id"),
        (
            ("cases", 1, "employee_remaining_hours"),
            float("nan"),
            "cases[1].employee_remaining_hours",
        ),
    ],
)
def test_malformed_instances_are_refused_naming_the_field(
    path: tuple[str | int, ...], value: object, field: str
) -> None:
    instance = _tiny()
    node: object = instance
    for step in path[:-1]:
        node = node[step]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    with pytest.raises(FormatError) as refused:
        load_instance(instance)
    assert refused.value.field == field


def test_an_employee_has_one_entitlement() -> None:
    instance = _tiny()
    cases = instance["cases"]
    assert isinstance(cases, list)
    cases[1]["employee"] = "E1"
    cases[1]["employee_remaining_hours"] = 8
    with pytest.raises(FormatError, match="differs from 4"):
        load_instance(instance)


def test_missing_fields_are_named() -> None:
    instance = _tiny()
    del instance["slot_minutes"]
    with pytest.raises(FormatError) as refused:
        load_instance(instance)
    assert str(refused.value) == "slot_minutes: is missing"
    inst = load_instance(_tiny())
    with pytest.raises(FormatError) as refused:
        load_schedule({"format": "eap-match-schedule/1", "sessions": [{"case": "K1"}]}, inst)
    assert refused.value.field == "sessions[0].counselor"


def test_schedules_round_trip(tmp_path: Path) -> None:
    inst = load_instance(_write(tmp_path / "tiny.json", _tiny()))
    schedule = solve(inst)
    assert load_schedule(dump_schedule(schedule), inst) == schedule
    assert schedule.sessions[0].start.tzinfo == inst.tz


# --- (c) the generator -----------------------------------------------------------------


def test_generator_is_deterministic_across_processes() -> None:
    def run(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        cmd = [
            sys.executable,
            "-m",
            "services.matcher.optimization.generate",
            "--scale",
            "S",
            "--seed",
            "2",
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout

    first = run("1")
    assert first == run("2")  # no set or dict order leaks in
    assert json.loads(first) == gen.generate("S", 2)
    assert gen.generate("S", 1) != gen.generate("S", 2)


@pytest.mark.parametrize("scale", ["S", "M", "L"])
def test_generated_instances_load_at_their_scale(scale: str) -> None:
    inst = load_instance(gen.generate(scale, 1))
    size = gen.SCALES[scale]
    assert (len(inst.cases), len(inst.counselors)) == (size.cases, size.counselors)
    assert (len(inst.agencies), len(inst.providers)) == (size.agencies, size.providers)
    assert any(c.kind == "crisis" for c in inst.cases)
    assert len({c.employee for c in inst.cases}) < len(inst.cases)  # second concerns
    assert any(iv.start.hour >= 18 for k in inst.counselors for iv in k.availability)


def test_generated_budgets_bind() -> None:
    inst = load_instance(gen.generate("M", 1))
    verdict = verify(inst, solve(inst))
    assert verdict.sessions_budget_bound < verdict.sessions_upper_bound
    spent = verdict.cost_ntd
    assert spent > sum(a.budget_ntd for a in inst.agencies) * 95 / 100


# --- (d) the greedy baseline -------------------------------------------------------------


@pytest.mark.parametrize("scale", ["S", "M"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_greedy_keeps_every_rule(scale: str, seed: int) -> None:
    inst = load_instance(gen.generate(scale, seed))
    schedule = solve(inst)
    verdict = verify(inst, schedule)
    assert verdict.violations == (), [str(v) for v in verdict.violations[:5]]
    assert not verdict.warnings, verdict.warnings  # its unserved list adds up, too
    assert 0 < verdict.sessions <= verdict.sessions_budget_bound
    assert solve(inst) == schedule  # deterministic


@needs_bench
@pytest.mark.parametrize("scale", ["S", "M"])
def test_greedy_keeps_every_rule_on_shared_instances(scale: str, tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        path = tmp_path / f"{scale}{seed}.json"
        path.write_text(_bench("gen_instance.py", "--scale", scale, "--seed", str(seed)))
        inst = load_instance(path)
        verdict = verify(inst, solve(inst))
        assert verdict.feasible, [str(v) for v in verdict.violations[:5]]


def test_crisis_first_is_the_default_order() -> None:
    inst = load_instance(gen.generate("S", 3))
    crisis_first = verify(inst, solve(inst))
    queue = verify(inst, solve(inst, order="submitted"))
    assert queue.feasible
    assert crisis_first.crisis_sessions >= queue.crisis_sessions


def test_verify_main_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inst_path = _write(tmp_path / "tiny.json", _tiny())
    bad = _write(
        tmp_path / "bad.json",
        {"format": "eap-match-schedule/1", "instance": "tiny", "sessions": _fine()[:1] * 2},
    )
    assert verify_cli.main([str(inst_path), str(bad)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["violations_by_rule"] == {"3": 1, "4": 1}
    assert verify_cli.main([str(inst_path), str(tmp_path / "none.json")]) == 2
    assert summary["feasible"] is False
