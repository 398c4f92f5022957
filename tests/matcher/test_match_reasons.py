"""Every reason code a case left short can carry, each on a small instance
built so that exactly that reason holds, and the solver's schedule says so."""

from __future__ import annotations

from typing import Any

import pytest

from services.matcher.optimization import solver
from services.matcher.optimization.instance import load_instance
from services.matcher.optimization.reasons import WORDS
from services.rules.codes import RuleCode

TUESDAY = ["2027-03-09T09:00", "2027-03-09T12:00"]
WEDNESDAY = ["2027-03-10T09:00", "2027-03-10T12:00"]
FRIDAY = ["2027-03-12T09:00", "2027-03-12T12:00"]


def instance(cases: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    """One week from Monday 8 March 2027; counselor C1 (psychological, P1)
    free on Tuesday and Friday mornings."""
    built: dict[str, Any] = {
        "format": "eap-match-instance/1",
        "name": "reasons",
        "timezone": "Asia/Taipei",
        "horizon": {"start": "2027-03-08", "weeks": 1},
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
        "counselors": [
            {
                "id": "C1",
                "provider": "P1",
                "specialties": ["psychological"],
                "modalities": ["in_person"],
                "max_sessions_per_day": 3,
                "availability": [TUESDAY, FRIDAY],
            }
        ],
        "agencies": [{"id": "A1", "budget_ntd": 20000}],
        "cases": cases,
    }
    built.update(changes)
    return built


def case(case_id: str, employee: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": case_id,
        "employee": employee,
        "agency": "A1",
        "category": "psychological",
        "kind": "general",
        "sessions": 1,
        "minutes": 60,
        "modalities": ["in_person"],
        "submitted": "2027-03-01T09:00",
        "availability": [TUESDAY],
        "preferred_counselor": None,
        "excluded_counselors": [],
        "employee_remaining_hours": 4,
        **changes,
    }


def one_slot(counselor_hours: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "id": "C1",
            "provider": "P1",
            "specialties": ["psychological"],
            "modalities": ["in_person"],
            "max_sessions_per_day": 3,
            "availability": [counselor_hours],
        }
    ]


CASES = {
    RuleCode.NO_QUALIFIED_COUNSELOR: instance([case("K1", "E1", category="legal")]),
    RuleCode.NO_COMMON_AVAILABILITY: instance([case("K1", "E1", availability=[WEDNESDAY])]),
    # Its reference time is the horizon's start, Monday 00:00: Friday is too late.
    RuleCode.CRISIS_DEADLINE: instance([case("K1", "E1", kind="crisis", availability=[FRIDAY])]),
    RuleCode.EMPLOYEE_ENTITLEMENT: instance([case("K1", "E1", employee_remaining_hours=0.5)]),
    # One employee, two cases, one week: one session between them.
    RuleCode.WEEKLY_LIMIT: instance([case("K1", "E1"), case("K2", "E1")]),
    RuleCode.AGENCY_BUDGET: instance(
        [case("K1", "E1"), case("K2", "E2")], agencies=[{"id": "A1", "budget_ntd": 3000}]
    ),
    RuleCode.PROVIDER_CAP: instance(
        [case("K1", "E1"), case("K2", "E2")],
        providers=[{"id": "P1", "hourly_rate_ntd": 2000, "hours_cap": 1}],
    ),
    # The counselor has one hour: two people want it.
    RuleCode.OUTCOMPETED: instance(
        [case("K1", "E1"), case("K2", "E2")],
        counselors=one_slot(["2027-03-09T09:00", "2027-03-09T10:00"]),
    ),
}


@pytest.mark.parametrize("reason", list(WORDS))
def test_each_reason_is_given_where_it_holds(reason: RuleCode) -> None:
    inst = load_instance(CASES[reason])
    schedule = solver.solve(inst, time_limit=5).schedule
    codes = [u.code for u in schedule.unserved]
    assert codes == [reason.value], schedule.unserved
    assert schedule.unserved[0].reason  # plain words too
    # Where one case could be served, it was.
    assert len(schedule.sessions) == len(inst.cases) - 1


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(WORDS)


def test_the_budget_is_named_when_only_a_dearer_counselor_is_left() -> None:
    """The cheap counselor's one hour went to K1; the dear one is free, but
    the budget left cannot pay for her: the budget, not the competition,
    keeps K2 out (as the quota would refuse her booking)."""
    dear = {
        "id": "C2",
        "provider": "P2",
        "specialties": ["psychological"],
        "modalities": ["in_person"],
        "max_sessions_per_day": 3,
        "availability": [TUESDAY],
    }
    inst = load_instance(
        instance(
            [case("K1", "E1"), case("K2", "E2")],
            providers=[
                {"id": "P1", "hourly_rate_ntd": 2000, "hours_cap": 10},
                {"id": "P2", "hourly_rate_ntd": 3000, "hours_cap": 10},
            ],
            counselors=[*one_slot(["2027-03-09T09:00", "2027-03-09T10:00"]), dear],
            agencies=[{"id": "A1", "budget_ntd": 4999}],
        )
    )
    schedule = solver.solve(inst, time_limit=5).schedule
    assert [(s.case, s.counselor) for s in schedule.sessions] in ([("K1", "C1")], [("K2", "C1")])
    assert [u.code for u in schedule.unserved] == [RuleCode.AGENCY_BUDGET.value]
