"""Finding a time for one meeting, as the "find a time" of mainstream
calendars does: every start on the slot grid, on office days within office
hours, where all required attendees are free; ranked by how many optional
attendees can come, then earliest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.calendar.program import OfficeHours, Person
from services.office_calendar import OfficeCalendar

MAX_WINDOW_DAYS = 366
MAX_OPTIONS = 100


@dataclass(frozen=True)
class MeetingOption:
    start: datetime
    end: datetime
    can_come: tuple[str, ...]  # optional attendees free then
    cannot_come: tuple[str, ...]  # optional attendees busy then


def find_meeting_times(
    required: Sequence[Person],
    optional: Sequence[Person],
    minutes: int,
    first: date,
    last: date,
    calendar: OfficeCalendar,
    office_hours: OfficeHours,
    slot_minutes: int = 30,
    limit: int = 10,
) -> list[MeetingOption]:
    """Up to `limit` options between `first` and `last` (inclusive), best
    first, none overlapping a better one; none at all when the required
    attendees share no free time."""
    length = timedelta(minutes=minutes)
    found: list[tuple[int, datetime, MeetingOption]] = []
    day = first
    while day <= last:
        if calendar.is_office_day(day):
            for start in office_hours.starts(day, minutes, slot_minutes):
                finish = start + length
                if not any(p.busy_during(start, finish) for p in required):
                    free = tuple(p.id for p in optional if not p.busy_during(start, finish))
                    busy = tuple(p.id for p in optional if p.id not in free)
                    found.append((-len(free), start, MeetingOption(start, finish, free, busy)))
        day += timedelta(days=1)
    found.sort(key=lambda f: (f[0], f[1]))
    # Distinct options: one that overlaps a better one adds nothing to choose.
    chosen: list[MeetingOption] = []
    for _, _, option in found:
        if not any(c.start < option.end and option.start < c.end for c in chosen):
            chosen.append(option)
            if len(chosen) == limit:
                break
    return chosen
