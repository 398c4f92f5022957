"""Re-planning around booked sessions (booked.py), at the optimizer's level:
a booked session stays in its ISO week (rule 8), a move costs what the
instance says, and the solver moves one only where that buys more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from fractions import Fraction
from typing import Any

from services.matcher.optimization import greedy
from services.matcher.optimization.booked import MoveReason, moves, undo_needless
from services.matcher.optimization.instance import (
    SEED_RULES,
    SEED_WEIGHTS,
    Schedule,
    Session,
    load_instance,
)
from services.matcher.optimization.report import render
from services.matcher.optimization.solver import solve
from services.matcher.optimization.verify import verify, violations_and_score


def _case(case_id: str, kind: str, availability: list[list[str]]) -> dict[str, Any]:
    return {
        "id": case_id,
        "employee": f"E-{case_id}",
        "agency": "A",
        "category": "psychological",
        "kind": kind,
        "sessions": 1,
        "minutes": 60,
        "modalities": ["video"],
        "submitted": "2027-03-08T08:00",
        "availability": availability,
        "preferred_counselor": None,
        "excluded_counselors": [],
        "employee_remaining_hours": 6,
    }


def one_counselor(move_cost: float) -> dict[str, Any]:
    """One counselor with an hour on Monday and one on Thursday. B holds
    Monday's; crisis case C, in on Monday at 08:00, can come only on Monday
    (Thursday 09:00 is past its 72 hours)."""
    monday, thursday = (
        ["2027-03-08T09:00", "2027-03-08T10:00"],
        [
            "2027-03-11T09:00",
            "2027-03-11T10:00",
        ],
    )
    return {
        "format": "eap-match-instance/1",
        "name": "replan",
        "timezone": "Asia/Taipei",
        "horizon": {"start": "2027-03-08", "weeks": 1},
        "slot_minutes": 30,
        "rules": dict(SEED_RULES),
        "weights": {**SEED_WEIGHTS, "move": move_cost},
        "providers": [{"id": "P", "hourly_rate_ntd": 2000, "hours_cap": 10}],
        "counselors": [
            {
                "id": "K",
                "provider": "P",
                "specialties": ["psychological"],
                "modalities": ["video"],
                "max_sessions_per_day": 4,
                "availability": [monday, thursday],
            }
        ],
        "agencies": [{"id": "A", "budget_ntd": 100_000}],
        "cases": [
            _case("B", "general", [monday, thursday]),
            _case("C", "crisis", [monday]),
        ],
        "booked": [
            {
                "booking": "bk-1",
                "case": "B",
                "counselor": "K",
                "start": "2027-03-08T09:00",
                "modality": "video",
            }
        ],
    }


def test_a_booked_session_moves_to_make_room_for_a_crisis_case() -> None:
    inst = load_instance(one_counselor(move_cost=50))
    report = solve(inst, time_limit=3)
    verdict = verify(inst, report.schedule)
    assert verdict.feasible and verdict.moves == 1
    placed = {s.case: s.start.strftime("%a %H:%M") for s in report.schedule.sessions}
    assert placed == {"C": "Mon 09:00", "B": "Thu 09:00"}
    (move,) = moves(inst, report.schedule.sessions)
    assert move.booked.booking == "bk-1" and move.to is not None
    assert (move.reason, move.for_case) == (MoveReason.ROOM_FOR_CRISIS, "C")
    # The move's cost is in the score: FORMAT.md's terms, less 50.
    free_moves = load_instance(one_counselor(move_cost=0))
    assert verdict.score == verify(free_moves, report.schedule).score - 50
    assert verdict.score > verify(inst, greedy.solve(inst)).score + 900  # the crisis served


def test_a_move_dearer_than_what_it_buys_is_not_made() -> None:
    inst = load_instance(one_counselor(move_cost=5000))
    report = solve(inst, time_limit=3)
    assert [(s.case, s.start.strftime("%a %H:%M")) for s in report.schedule.sessions] == [
        ("B", "Mon 09:00")
    ]
    assert not moves(inst, report.schedule.sessions)
    assert [u.case for u in report.schedule.unserved] == ["C"]


def test_first_come_booking_keeps_every_booked_session_where_it_is() -> None:
    inst = load_instance(one_counselor(move_cost=50))
    schedule = greedy.solve(inst)
    assert [(s.case, s.start.strftime("%a %H:%M")) for s in schedule.sessions] == [
        ("B", "Mon 09:00")
    ]


def test_rule_8_a_booked_session_never_leaves_its_week() -> None:
    inst = load_instance(one_counselor(move_cost=50))
    kept = greedy.solve(inst)
    dropped = Schedule(inst.name, ())
    verdict = verify(inst, dropped)
    assert verdict.broken_rules() == {8}
    assert "bk-1" in str(verdict.violations[0])
    assert verify(inst, kept).feasible


def test_booked_sessions_are_checked_as_they_are_read() -> None:
    data = one_counselor(move_cost=50)
    data["booked"].append(dict(data["booked"][0], booking="bk-2", start="2027-03-11T09:00"))
    try:
        load_instance(data)
    except ValueError as error:
        assert "booked[1].start" in str(error)
    else:
        raise AssertionError("two booked sessions of a case in one week were read")


def test_needless_moves_and_rings_of_moves_are_put_back() -> None:
    data = one_counselor(move_cost=50)
    data["counselors"][0]["availability"] = [["2027-03-08T09:00", "2027-03-08T11:00"]]
    data["cases"] = [
        _case("A", "general", [["2027-03-08T09:00", "2027-03-08T11:00"]]),
        _case("B", "general", [["2027-03-08T09:00", "2027-03-08T11:00"]]),
    ]
    data["booked"] = [
        {"booking": f"bk-{c}", "case": c, "counselor": "K", "start": t, "modality": "video"}
        for c, t in (("A", "2027-03-08T09:00"), ("B", "2027-03-08T10:00"))
    ]
    inst = load_instance(data)
    kept = greedy.solve(inst).sessions
    # A and B swapped: each waits on the other's place, so neither could be
    # made first; and it buys nothing.
    swapped = [replace(s, start=kept[1 - n].start) for n, s in enumerate(kept)]
    assert len(moves(inst, swapped)) == 2

    def score(sessions: Sequence[Session]) -> Fraction | None:
        violations, found = violations_and_score(inst, Schedule(inst.name, tuple(sessions)))
        return None if violations else found

    assert score(swapped) is not None
    assert not moves(inst, undo_needless(inst, swapped, score))
    # One moved into a free place and back again.
    morning = [["2027-03-08T09:00", "2027-03-08T12:00"]]
    data["counselors"][0]["availability"] = morning
    for item in data["cases"]:
        item["availability"] = morning
    inst = load_instance(data)
    later = [kept[0], replace(kept[1], start=kept[1].start + timedelta(hours=1))]
    assert len(moves(inst, later)) == 1 and score(later) is not None
    assert undo_needless(inst, later, score) == list(kept)


def test_the_report_lists_each_move_with_its_reason() -> None:
    inst = load_instance(one_counselor(move_cost=50))
    page = render(inst, solve(inst, time_limit=2).schedule)
    assert "改期的已預約會談" in page and "bk-1" in page  # the report is HR's, in zh-TW
    assert "為危機個案 C 在期限內騰出時段" in page
    plain = load_instance({**one_counselor(move_cost=50), "booked": []})
    assert "改期的已預約會談" not in render(plain, greedy.solve(plain))
