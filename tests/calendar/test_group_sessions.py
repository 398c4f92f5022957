"""Group sessions proposed from open cases: times most of them can make,
never two sessions in one ISO week for a person, never beyond what their
entitlement can pay."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time

from services.calendar.group_sessions import GroupCandidate, Leader, propose_group_sessions
from services.calendar.program import OfficeHours, Span
from services.office_calendar import load_shipped

HOURS = OfficeHours(((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))))


def _span(day: int, start: int, end: int) -> Span:
    return Span(datetime(2027, 3, day, start), datetime(2027, 3, day, end))


def _every_afternoon() -> tuple[Span, ...]:
    # 8-12 and 15-19 March 2027: two office weeks (ISO weeks 10 and 11).
    return tuple(_span(d, 13, 18) for d in (8, 9, 10, 11, 12, 15, 16, 17, 18, 19))


def test_sessions_fit_most_and_keep_weekly_and_entitlement_rules() -> None:
    leader = Leader("C001", _every_afternoon())
    wednesday_people = [
        GroupCandidate(
            f"K{n}", f"emp-{n}", (_span(10, 14, 16), _span(17, 14, 16)), frozenset(), 240
        )
        for n in range(6)
    ]
    # emp-1 has another case: both cases are the same person.
    twin = GroupCandidate("K1b", "emp-1", (_span(10, 14, 16),), frozenset(), 240)
    # Already has a session in week 11; and one whose entitlement pays for one session only.
    busy_week = GroupCandidate(
        "K7", "emp-7", (_span(10, 14, 16), _span(17, 14, 16)), frozenset({(2027, 11)}), 240
    )
    nearly_out = GroupCandidate(
        "K8", "emp-8", (_span(10, 14, 16), _span(17, 14, 16)), frozenset(), 90
    )
    proposals = propose_group_sessions(
        [*wednesday_people, twin, busy_week, nearly_out],
        [leader],
        90,
        date(2027, 3, 8),
        date(2027, 3, 19),
        load_shipped(),
        HOURS,
        min_size=4,
        max_size=10,
    )
    assert [(p.start, p.end.time()) for p in proposals] == [
        (datetime(2027, 3, 10, 14), time(15, 30)),
        (datetime(2027, 3, 17, 14), time(15, 30)),
    ]
    first, second = (set(p.case_ids) for p in proposals)
    assert "K1b" not in first or "K1" not in first  # one person, one session a week
    assert "K7" in first and "K7" not in second  # week 11 was already taken
    assert "K8" in first and "K8" not in second  # 90 minutes left pays for one
    weeks = Counter((case, p.start.isocalendar().week) for p in proposals for case in p.case_ids)
    assert max(weeks.values()) == 1


def test_no_session_below_the_minimum_or_outside_the_leaders_time() -> None:
    leader = Leader("C001", (_span(10, 9, 12),))  # mornings only
    people = [
        GroupCandidate(f"K{n}", f"emp-{n}", (_span(10, 14, 16),), frozenset(), 240)
        for n in range(6)
    ]
    assert (
        propose_group_sessions(
            people, [leader], 60, date(2027, 3, 8), date(2027, 3, 12), load_shipped(), HOURS
        )
        == []
    )
    morning = Leader("C002", (_span(10, 13, 17),))
    few = people[:3]
    assert (
        propose_group_sessions(
            few,
            [morning],
            60,
            date(2027, 3, 8),
            date(2027, 3, 12),
            load_shipped(),
            HOURS,
            min_size=4,
        )
        == []
    )
