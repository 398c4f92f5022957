"""Ad hoc changes to a plan: an event added, moved or cancelled by hand
must leave every rule the planner keeps still kept. `problems` lists, in
plain words with a rule code, whatever a proposed placement would break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.calendar.planner import Event
from services.calendar.program import Activity, Program
from services.office_calendar import OfficeCalendar


@dataclass(frozen=True)
class Problem:
    rule: str  # OUTSIDE_OFFICE_HOURS, ATTENDEE_BUSY, DOUBLE_BOOKED, ...
    words: str


@dataclass(frozen=True)
class Placement:
    """Where an event would go: its time, room and who must be there."""

    start: datetime
    end: datetime
    room: str | None
    required: tuple[str, ...]
    seats: int = 0


def problems(
    program: Program,
    calendar: OfficeCalendar,
    others: Sequence[Event],
    placement: Placement,
    activity: Activity | None = None,
    occurrence: int = 0,
) -> list[Problem]:
    """What `placement` would break, given the plan's `others` (the event
    itself left out); `activity` and `occurrence` add that activity's own
    rules (its window, the gap between its occurrences)."""
    found: list[Problem] = []
    start, end = placement.start, placement.end
    if end <= start or end.date() != start.date():
        found.append(Problem("OUTSIDE_OFFICE_HOURS", "an event starts and ends on one day"))
        return found
    if not calendar.is_office_day(start.date()):
        found.append(Problem("NOT_AN_OFFICE_DAY", f"{start:%Y-%m-%d} is not an office day"))
    hours = program.office_hours.blocks
    if not any(b <= start.time() and end.time() <= e for b, e in hours):
        blocks = ", ".join(f"{b:%H:%M}-{e:%H:%M}" for b, e in hours)
        found.append(Problem("OUTSIDE_OFFICE_HOURS", f"office hours are {blocks}"))
    people = {p.id: p for p in program.people}
    for person_id in placement.required:
        person = people.get(person_id)
        if person is not None and person.busy_during(start, end):
            found.append(Problem("ATTENDEE_BUSY", f"{person_id} is busy then"))
    same_day: dict[str, int] = {}
    for other in others:
        overlaps = other.start < end and start < other.end
        shared = sorted(set(other.required) & set(placement.required))
        if overlaps and shared:
            found.append(
                Problem(
                    "DOUBLE_BOOKED",
                    f"{', '.join(shared)} {'are' if len(shared) > 1 else 'is'} at "
                    f"{other.activity} #{other.occurrence} then",
                )
            )
        if overlaps and placement.room is not None and other.room == placement.room:
            found.append(
                Problem(
                    "ROOM_TAKEN",
                    f"room {placement.room} holds {other.activity} #{other.occurrence}",
                )
            )
        if other.start.date() == start.date():
            for person_id in set(other.required) & set(placement.required):
                same_day[person_id] = same_day.get(person_id, 0) + 1
    limit = program.max_events_per_person_per_day
    for person_id, count in sorted(same_day.items()):
        if count >= limit:
            found.append(Problem("DAILY_LIMIT", f"{person_id} already has {count} events that day"))
    if placement.room is not None:
        rooms = {r.id: r.capacity for r in program.rooms}
        if placement.room not in rooms:
            found.append(Problem("UNKNOWN_ROOM", f"no room {placement.room!r}"))
        elif rooms[placement.room] < placement.seats:
            found.append(
                Problem(
                    "ROOM_TOO_SMALL",
                    f"room {placement.room} seats {rooms[placement.room]}, not {placement.seats}",
                )
            )
    if activity is not None:
        found += _activity_rules(program, others, placement, activity, occurrence)
    return found


def _activity_rules(
    program: Program,
    others: Sequence[Event],
    placement: Placement,
    activity: Activity,
    occurrence: int,
) -> list[Problem]:
    found = []
    days = activity.occurrence_days(program.year)
    allowed = days[occurrence - 1] if 0 < occurrence <= len(days) else []
    if placement.start.date() not in allowed:
        windows = ", ".join(str(w) for w in activity.windows)
        found.append(Problem("OUTSIDE_WINDOW", f"{activity.id} #{occurrence} belongs in {windows}"))
    gap = timedelta(days=activity.min_gap_days)
    for other in others:
        if other.activity == activity.id and abs(other.start - placement.start) < gap:
            found.append(
                Problem(
                    "SPREAD",
                    f"{activity.id} #{other.occurrence} is less than "
                    f"{activity.min_gap_days} days away",
                )
            )
    return found
