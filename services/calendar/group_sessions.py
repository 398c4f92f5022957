"""Proposing group counseling sessions from open cases that share a theme
and accept a group: times that fit most of them, with a counselor free to
lead, under the same rules as individual sessions (one session per person
per ISO week, the entitlement left).

The proposal is greedy, week by week: in each week, the leader's start that
the most eligible participants can make, filled up to the group's size;
then the next best start that still gathers enough people, and so on. A
participant is never put in two sessions of one week, nor in a session
their entitlement cannot pay for. Booking them is `Plans.book_groups`, through
the matcher, which checks every rule again when it books.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.calendar.program import OfficeHours, Span
from services.office_calendar import OfficeCalendar
from services.rules.office_time import iso_week


@dataclass(frozen=True)
class GroupCandidate:
    case_id: str
    employee: str  # pseudonymous
    availability: tuple[Span, ...]
    booked_weeks: frozenset[tuple[int, int]]  # ISO weeks the employee already has a session
    minutes_left: int  # entitlement left
    modalities: frozenset[str] = frozenset()  # "in_person", "video", "phone"


@dataclass(frozen=True)
class Leader:
    counselor_id: str
    free: tuple[Span, ...]  # when the counselor could lead a group


@dataclass(frozen=True)
class GroupProposal:
    counselor_id: str
    start: datetime
    end: datetime
    case_ids: tuple[str, ...]


def propose_group_sessions(
    candidates: Sequence[GroupCandidate],
    leaders: Sequence[Leader],
    minutes: int,
    first: date,
    last: date,
    calendar: OfficeCalendar,
    office_hours: OfficeHours,
    min_size: int = 4,
    max_size: int = 10,
    slot_minutes: int = 30,
) -> list[GroupProposal]:
    length = timedelta(minutes=minutes)
    minutes_left = {c.case_id: c.minutes_left for c in candidates}
    by_case = {c.case_id: c for c in candidates}
    employee_weeks: dict[str, set[tuple[int, int]]] = {}
    for c in candidates:
        employee_weeks.setdefault(c.employee, set()).update(c.booked_weeks)
    leader_busy: dict[str, list[tuple[datetime, datetime]]] = {}
    proposals: list[GroupProposal] = []
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        week_days = [
            monday + timedelta(days=n)
            for n in range(7)
            if first <= monday + timedelta(days=n) <= last
            and calendar.is_office_day(monday + timedelta(days=n))
        ]
        week = iso_week(monday)
        while True:
            best: tuple[int, datetime, str, list[str]] | None = None
            for day in week_days:
                for start in office_hours.starts(day, minutes, slot_minutes):
                    end = start + length
                    for leader in leaders:
                        if not _inside(leader.free, start, end):
                            continue
                        busy = leader_busy.get(leader.counselor_id, [])
                        if any(b < end and start < e for b, e in busy):
                            continue
                        who = _one_case_each(
                            c
                            for c in candidates
                            if week not in employee_weeks[c.employee]
                            and minutes_left[c.case_id] >= minutes
                            and _inside(c.availability, start, end)
                        )
                        if len(who) >= min_size and (best is None or len(who) > best[0]):
                            chosen = [c.case_id for c in who[:max_size]]
                            best = (len(who), start, leader.counselor_id, chosen)
            if best is None:
                break
            _, start, counselor_id, chosen = best
            proposals.append(GroupProposal(counselor_id, start, start + length, tuple(chosen)))
            leader_busy.setdefault(counselor_id, []).append((start, start + length))
            for case_id in chosen:
                employee_weeks[by_case[case_id].employee].add(week)
                minutes_left[case_id] -= minutes
        monday += timedelta(weeks=1)
    return proposals


def _one_case_each(eligible: Iterable[GroupCandidate]) -> list[GroupCandidate]:
    """A person with two open cases still sits in one session a week."""
    seen: set[str] = set()
    kept = []
    for candidate in eligible:
        if candidate.employee not in seen:
            seen.add(candidate.employee)
            kept.append(candidate)
    return kept


def _inside(spans: Sequence[Span], start: datetime, end: datetime) -> bool:
    return any(s.start <= start and end <= s.end for s in spans)
