"""The rules package: a unit test per rule, and a proof that each rule is
defined there and nowhere else in the suite's code."""

from __future__ import annotations

import ast
import datetime as dt
from fractions import Fraction
from pathlib import Path

import pytest

from services.rules import sessions
from services.rules.codes import RuleCode
from services.rules.cost import session_cost_ntd
from services.rules.office_time import OFFICE_ZONE, fiscal_year_of, iso_week, local_day

SERVICES = Path(__file__).resolve().parents[2] / "services"
RULES = SERVICES / "rules"


# --- one test per rule -------------------------------------------------------------


def test_a_session_lasts_one_to_two_hours_in_half_hours() -> None:
    assert [m for m in range(0, 200) if sessions.session_length_ok(m)] == list(range(60, 121))
    assert [m for m in range(0, 200) if sessions.bookable_length(m)] == [60, 90, 120]


def test_one_session_per_person_per_week() -> None:
    assert sessions.WEEKLY_SESSION_LIMIT == 1
    assert sessions.within_weekly_limit(1) and not sessions.within_weekly_limit(2)


def test_a_crisis_is_seen_within_72_hours() -> None:
    assert sessions.CRISIS_DEADLINE_HOURS == 72


def test_the_office_keeps_taipei_time_and_iso_weeks() -> None:
    # Sunday 23:30 UTC is Monday 07:30 in Taipei: the next ISO week there.
    sunday_night = dt.datetime(2027, 3, 7, 23, 30, tzinfo=dt.UTC)
    assert local_day(sunday_night) == dt.date(2027, 3, 8)
    assert iso_week(sunday_night) == (2027, 10) and iso_week(sunday_night).label == "2027-W10"
    assert iso_week(dt.datetime(2027, 3, 7, 12, tzinfo=OFFICE_ZONE)).label == "2027-W09"
    # A naive time is already office time; a day is its own.
    assert iso_week(dt.datetime(2027, 3, 7, 23, 30)) == (2027, 9)
    assert iso_week(dt.date(2027, 1, 1)) == (2026, 53)


def test_the_fiscal_year_is_the_calendar_year_in_taipei() -> None:
    new_year = dt.datetime(2026, 12, 31, 17, tzinfo=dt.UTC)  # 1 January, 01:00 in Taipei
    assert fiscal_year_of(new_year) == 2027
    assert fiscal_year_of(dt.date(2027, 7, 1), start_month=7) == 2028


@pytest.mark.parametrize(
    ("rate", "minutes", "cost"),
    [
        (2000, 60, 2000),
        (2000, 90, 3000),
        (2001, 90, 3002),  # 3001.5, rounded up
        (2000, 100, 3334),  # 3333.33..., rounded up
        (Fraction(4001, 2), 90, 3001),  # 3000.75: fractional rates too
        (0, 120, 0),
    ],
)
def test_a_session_costs_its_rate_pro_rata_rounded_up_to_the_dollar(
    rate: int | Fraction, minutes: int, cost: int
) -> None:
    assert session_cost_ntd(rate, minutes) == cost
    assert session_cost_ntd(rate, minutes) >= Fraction(rate) * minutes / 60


def test_rule_codes_are_their_own_names() -> None:
    assert all(code.value == code.name for code in RuleCode)


# --- each rule is defined once -----------------------------------------------------


def _modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(SERVICES.rglob("*.py"))
        if RULES not in path.parents and "migrations" not in path.parts
    ]


def test_no_module_outside_the_rules_defines_one_of_them() -> None:
    found = []
    for path, tree in _modules():
        where = path.relative_to(SERVICES.parent)
        for node in ast.walk(tree):
            # The time zone, by name.
            if isinstance(node, ast.Constant) and node.value == "Asia/Taipei":
                found.append(f"{where}:{node.lineno}: the office time zone")
            # The ISO week (and any other use of isocalendar's week).
            if isinstance(node, ast.Attribute) and node.attr == "isocalendar":
                found.append(f"{where}:{node.lineno}: an ISO week")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                "iso_week" in node.name or ("cost" in node.name and "ntd" in node.name)
            ):
                found.append(f"{where}:{node.lineno}: def {node.name}")
            # Rule codes: an enum or class of them, or a bare code constant.
            if isinstance(node, ast.ClassDef):
                members = {
                    t.id
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign)
                    for t in stmt.targets
                    if isinstance(t, ast.Name)
                }
                if members & {"WEEKLY_LIMIT", "AGENCY_BUDGET", "PROVIDER_CAP", "NOT_BOOKABLE"}:
                    found.append(f"{where}:{node.lineno}: class {node.name} of rule codes")
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                value = node.value
                if isinstance(value, ast.Constant) and value.value in set(RuleCode):
                    found.append(f"{where}:{node.lineno}: the rule code {value.value}")
                # The session bounds and the weekly limit as numbers.
                if names & {"MIN_MINUTES", "MAX_MINUTES", "SLOT_MINUTES", "WEEKLY_LIMIT"} or any(
                    "SESSION_MINUTES" in n or "SESSIONS_PER_WEEK" in n for n in names
                ):
                    found.append(f"{where}:{node.lineno}: {', '.join(sorted(names))}")
            # 60 <= minutes <= 120, written out.
            if isinstance(node, ast.Compare) and {
                c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)
            } >= {60, 120}:
                found.append(f"{where}:{node.lineno}: the session length, written out")
    assert found == []
