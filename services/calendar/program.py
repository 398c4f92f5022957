"""A year's programme of meetings, trainings and group sessions, as HR
writes it down: who must come, how often, inside which months, in which
rooms. Plain values, free of any framework; `program_file` reads them from
the TOML file HR edits, `planner` places them on the office calendar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import Enum
from functools import cached_property


class Cadence(Enum):
    ONCE = "once"
    YEARLY = "yearly"
    TWICE_A_YEAR = "twice-a-year"
    QUARTERLY = "quarterly"
    MONTHLY = "monthly"
    TIMES = "times"  # a set number, `Activity.times`


class Kind(Enum):
    MEETING = "meeting"
    TRAINING = "training"
    GROUP = "group"  # group counseling


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class MonthRange:
    """Months `first` to `last` (1-12) of the plan's year. A range across
    the new year ("Nov-Feb") means both ends of the one fiscal year, which
    is the calendar year: January-February and November-December."""

    first: int
    last: int

    def months(self) -> list[int]:
        if self.first <= self.last:
            return list(range(self.first, self.last + 1))
        return [*range(1, self.last + 1), *range(self.first, 13)]

    def days(self, year: int) -> list[date]:
        found = []
        for month in self.months():
            day = date(year, month, 1)
            while day.month == month:
                found.append(day)
                day += timedelta(days=1)
        return found

    def __str__(self) -> str:
        return f"{MONTHS[self.first - 1]}-{MONTHS[self.last - 1]}"


@dataclass(frozen=True)
class Span:
    """A busy interval `[start, end)`, local time."""

    start: datetime
    end: datetime

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end


@dataclass(frozen=True)
class WeeklyBusy:
    """Busy every week: weekday 0 (Monday) to 6, `[start, end)`."""

    weekday: int
    start: time
    end: time


@dataclass(frozen=True)
class Person:
    id: str  # an identifier HR chooses (a staff code, a role title): no names needed
    roles: tuple[str, ...] = ()
    busy: tuple[Span, ...] = ()
    weekly_busy: tuple[WeeklyBusy, ...] = ()

    def busy_during(self, start: datetime, end: datetime) -> bool:
        if any(span.overlaps(start, end) for span in self.busy):
            return True
        for weekly in self.weekly_busy:
            if start.weekday() == weekly.weekday:
                day = start.date()
                if Span(
                    datetime.combine(day, weekly.start), datetime.combine(day, weekly.end)
                ).overlaps(start, end):
                    return True
        return False


@dataclass(frozen=True)
class Room:
    id: str
    capacity: int


@dataclass(frozen=True)
class Preference:
    """Soft wishes about when an activity happens."""

    part_of_day: str | None = None  # "morning" or "afternoon"
    weekdays: tuple[int, ...] = ()  # 0 = Monday
    earlier: bool = False  # earlier in its window rather than later


@dataclass(frozen=True)
class Activity:
    id: str
    title: str
    kind: Kind
    cadence: Cadence
    windows: tuple[MonthRange, ...]
    duration_minutes: int
    required: tuple[str, ...]  # person ids, roles resolved
    optional: tuple[str, ...] = ()
    needs_room: bool = True
    room_capacity: int = 0  # seats the room must have (0: as many as attendees)
    capacity: int = 0  # trainings and groups: seats offered for enrollment
    audience: tuple[str, ...] = ()  # who may enroll (person ids, roles resolved)
    times: int = 1  # for Cadence.TIMES
    min_gap_days: int = 0  # between consecutive occurrences
    preference: Preference = field(default_factory=Preference)

    def occurrences(self) -> int:
        if self.cadence is Cadence.TWICE_A_YEAR:
            return 2
        if self.cadence is Cadence.QUARTERLY:
            return 4
        if self.cadence is Cadence.MONTHLY:
            return len({m for w in self.windows for m in w.months()})
        if self.cadence is Cadence.TIMES:
            return self.times
        return 1

    def occurrence_days(self, year: int) -> list[list[date]]:
        """The days each occurrence may fall on, by the cadence: quarterly,
        one in each quarter; monthly, one in each month; twice a year with
        two windows, one in each; otherwise anywhere in the windows."""
        every = sorted({d for w in self.windows for d in w.days(year)})
        if self.cadence is Cadence.QUARTERLY:
            return [[d for d in every if (d.month - 1) // 3 == q] for q in range(4)]
        if self.cadence is Cadence.MONTHLY:
            months = sorted({d.month for d in every})
            return [[d for d in every if d.month == m] for m in months]
        if self.cadence is Cadence.TWICE_A_YEAR and len(self.windows) == 2:
            return [w.days(year) for w in self.windows]
        return [every for _ in range(self.occurrences())]

    def seats(self) -> int:
        """How many people the room must hold."""
        attending = len(self.required) + len(self.optional) + self.capacity
        return max(self.room_capacity, attending)


@dataclass(frozen=True)
class OfficeHours:
    blocks: tuple[tuple[time, time], ...]  # e.g. 08:30-12:00 and 13:30-17:30

    def starts(self, day: date, minutes: int, slot_minutes: int) -> list[datetime]:
        """Starts on the slot grid (from midnight) where `minutes` fit
        inside one block of `day`."""
        found = []
        length = timedelta(minutes=minutes)
        for begin, end in self.blocks:
            start = datetime.combine(day, begin)
            start += timedelta(minutes=-(begin.hour * 60 + begin.minute) % slot_minutes)
            while start + length <= datetime.combine(day, end):
                found.append(start)
                start += timedelta(minutes=slot_minutes)
        return found


@dataclass(frozen=True)
class Weights:
    placed: int = 1000  # per occurrence placed: placing comes first
    optional_attendee: int = 10  # per optional attendee free at the time
    preferred_time: int = 5  # per preference met
    earlier: int = 1  # per week earlier, for activities that ask
    spread: int = 1  # per week away from an even spread through the window


@dataclass(frozen=True)
class Program:
    name: str
    year: int
    office_hours: OfficeHours
    slot_minutes: int
    max_events_per_person_per_day: int
    people: tuple[Person, ...]
    rooms: tuple[Room, ...]
    activities: tuple[Activity, ...]
    weights: Weights = field(default_factory=Weights)

    def person(self, person_id: str) -> Person:
        return self._people[person_id]

    @cached_property
    def _people(self) -> dict[str, Person]:
        return {p.id: p for p in self.people}
