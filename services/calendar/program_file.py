"""Reads a programme from the TOML file HR edits (see
`examples/pingtung-2027.toml` for every key, with comments).

A mistake is reported with the key that holds it and, where the file shows
it, the line: `activities[3].windows (line 57): "Feb-Zzz" is not a month
range like "Jan-Mar"`. Every mistake in the file is reported at once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import Any, TypeVar

from services.calendar import program_limits
from services.calendar.program import (
    MONTHS,
    Activity,
    Cadence,
    Kind,
    MonthRange,
    OfficeHours,
    Person,
    Preference,
    Program,
    Room,
    Span,
    WeeklyBusy,
    Weights,
)
from services.calendar.program_mistakes import LineIndex, listed
from services.calendar.program_mistakes import Mistake as Mistake
from services.calendar.program_mistakes import ProgramFileError as ProgramFileError
from services.calendar.program_mistakes import ProgramTooLarge as ProgramTooLarge

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_DURATION_MINUTES = 8 * 60
# Taiwan's government offices: 08:30-12:00 and 13:30-17:30, lunch between.
DEFAULT_OFFICE_HOURS = OfficeHours(((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))))
PROGRAM_KEYS = ("name", "year", "office_hours", "slot_minutes", "max_events_per_person_per_day")
PERSON_KEYS = ("id", "ids", "roles", "busy", "weekly_busy")
ACTIVITY_KEYS = (
    "id",
    "title",
    "kind",
    "cadence",
    "windows",
    "duration_minutes",
    "required",
    "optional",
    "needs_room",
    "room_capacity",
    "capacity",
    "audience",
    "min_gap_days",
    "part_of_day",
    "weekdays",
    "earlier",
)
T = TypeVar("T")


def load_program(path: str | Path) -> Program:
    return parse_program(Path(path).read_text(encoding="utf-8"))


def parse_program(text: str) -> Program:
    """The programme, or ProgramFileError naming every mistake; in time
    linear in the text (within `program_limits`)."""
    problem = program_limits.size_problem(text) or program_limits.depth_problem(text)
    if problem:
        raise ProgramTooLarge(problem)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        line = re.search(r"line (\d+)", str(error))
        raise ProgramFileError(
            [Mistake("(file)", int(line.group(1)) if line else None, str(error))]
        ) from None
    except RecursionError:
        # The text check counts levels before this; were it ever to count
        # short, the depth is still the caller's mistake, not ours.
        raise ProgramTooLarge(program_limits.depth_words()) from None
    problem = program_limits.shape_problem(data)
    if problem:
        raise ProgramTooLarge(problem)
    reader = _Reader(text)
    program = reader.program(data)
    if reader.mistakes:
        raise ProgramFileError(reader.mistakes)
    assert program is not None
    return program


class _Reader:
    def __init__(self, text: str) -> None:
        self._lines = LineIndex(text)
        self.mistakes: list[Mistake] = []
        self._named = 0  # named at activities so far, roles expanded
        self._role_names = "none"  # for messages, once the people are read

    # --- reporting ---------------------------------------------------------

    def fail(self, key: str, message: str) -> None:
        self.mistakes.append(Mistake(key, self._lines.line_of(key), message))

    # --- typed fields ------------------------------------------------------

    def field(
        self, table: dict[str, Any], key: str, name: str, kind: type[T], default: T | None = None
    ) -> T | None:
        value = table.get(name, default)
        if value is None:
            self.fail(f"{key}.{name}" if key else name, "is missing")
            return None
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            self.fail(f"{key}.{name}" if key else name, f"must be a {kind.__name__}")
            return None
        return value

    def each(
        self, table: dict[str, Any], key: str, name: str, read: Callable[[Any, str], T | None]
    ) -> list[T]:
        values = table.get(name, [])
        where = f"{key}.{name}" if key else name
        if not isinstance(values, list):
            self.fail(where, "must be a list")
            return []
        found = []
        for n, value in enumerate(values):
            item = read(value, f"{where}[{n}]")
            if item is not None:
                found.append(item)
        return found

    # --- the file ----------------------------------------------------------

    def program(self, data: dict[str, Any]) -> Program | None:
        head = data.get("program")
        if not isinstance(head, dict):
            self.fail("program", "is missing: a [program] table with name and year")
            return None
        self._known_keys(head, "program", PROGRAM_KEYS)
        for extra in set(data) - {"program", "weights", "people", "rooms", "activities"}:
            self.fail(
                extra, "is not a table of a programme (program, weights, people, rooms, activities)"
            )
        name = self.field(head, "program", "name", str)
        year = self.field(head, "program", "year", int)
        if year is not None and not 2000 <= year <= 2200:
            self.fail("program.year", "must be a year between 2000 and 2200")
        slot = self.field(head, "program", "slot_minutes", int, 30)
        if slot is not None and not (5 <= slot <= 120 and 1440 % slot == 0):
            self.fail("program.slot_minutes", "must divide a day, between 5 and 120")
        per_day = self.field(head, "program", "max_events_per_person_per_day", int, 2)
        if per_day is not None and per_day < 1:
            self.fail("program.max_events_per_person_per_day", "must be at least 1")
        hours = self.each(head, "program", "office_hours", self._block)
        if not hours and "office_hours" not in head:
            hours = list(DEFAULT_OFFICE_HOURS.blocks)
        weights = self._weights(data.get("weights", {}))
        people = [p for group in self.each(data, "", "people", self._person) for p in group]
        rooms = self.each(data, "", "rooms", self._room)
        known_ids = [p.id for p in people]
        self._duplicates("people", known_ids)
        roles: dict[str, list[str]] = {}
        for person in people:
            for role in person.roles:
                roles.setdefault(role, []).append(person.id)
        self._role_names = listed(sorted(roles))
        self._duplicates("rooms", [r.id for r in rooms])
        everyone = set(known_ids)
        activities = self.each(
            data, "", "activities", lambda v, k: self._activity(v, k, everyone, roles)
        )
        self._duplicates("activities", [a.id for a in activities])
        if None in (name, year, slot, per_day):
            return None
        assert name is not None and year is not None and slot is not None
        assert per_day is not None
        return Program(
            name=name,
            year=year,
            office_hours=OfficeHours(tuple(hours)),
            slot_minutes=slot,
            max_events_per_person_per_day=per_day,
            people=tuple(people),
            rooms=tuple(rooms),
            activities=tuple(activities),
            weights=weights,
        )

    def _duplicates(self, table: str, ids: list[str]) -> None:
        """Each id given more than once, reported at its first appearance."""
        first: dict[str, int] = {}
        reported: set[str] = set()
        for n, given in enumerate(ids):
            if given not in first:
                first[given] = n
            elif given not in reported:
                reported.add(given)
                self.fail(f"{table}[{first[given]}].id", f"{given!r} appears more than once")

    def _block(self, value: Any, key: str) -> tuple[time, time] | None:
        match = (
            re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", value) if isinstance(value, str) else None
        )
        if match is None:
            self.fail(key, f'{value!r} is not a time range like "08:30-12:00"')
            return None
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h1, m1) >= (h2, m2) or (h2 == 24 and m2):
            self.fail(key, f"{value!r} does not run forward within one day")
            return None
        end = time(23, 59) if h2 == 24 else time(h2, m2)
        return time(h1, m1), end

    def _weights(self, table: Any) -> Weights:
        if not isinstance(table, dict):
            self.fail("weights", "must be a table")
            return Weights()
        values = {}
        for name in Weights.__dataclass_fields__:
            if name in table:
                value = self.field(table, "weights", name, int)
                if value is not None and value < 0:
                    self.fail(f"weights.{name}", "must not be negative")
                elif value is not None:
                    values[name] = value
        for name in set(table) - set(Weights.__dataclass_fields__):
            self.fail(
                f"weights.{name}", f"is not a weight ({', '.join(Weights.__dataclass_fields__)})"
            )
        return Weights(**values)

    def _person(self, table: Any, key: str) -> list[Person] | None:
        """One person (`id`), or several alike (`ids`: the same roles and
        busy times, e.g. a group of volunteers)."""
        if not isinstance(table, dict):
            self.fail(key, "must be a table")
            return None
        self._known_keys(table, key, PERSON_KEYS)
        if "ids" in table:
            ids = self.each(table, key, "ids", self._word)
        else:
            one = self.field(table, key, "id", str)
            ids = [one] if one is not None else []
        roles = self.each(table, key, "roles", self._word)
        busy = self.each(table, key, "busy", self._span)
        weekly = self.each(table, key, "weekly_busy", self._weekly)
        return [Person(i, tuple(roles), tuple(busy), tuple(weekly)) for i in ids]

    def _known_keys(self, table: dict[str, Any], key: str, known: tuple[str, ...]) -> None:
        for name in table:
            if name not in known:
                self.fail(f"{key}.{name}", f"is not a key here ({', '.join(known)})")

    def _word(self, value: Any, key: str) -> str | None:
        if not isinstance(value, str) or not re.fullmatch(r"[\w.-]+", value):
            self.fail(key, f"{value!r} is not a name of letters, digits, '-', '_' or '.'")
            return None
        return value

    def _span(self, value: Any, key: str) -> Span | None:
        # "2027-03-01 09:00/12:00" or "2027-03-01 09:00/2027-03-03 17:00"
        text = value if isinstance(value, str) else ""
        match = re.fullmatch(
            r"(\d{4}-\d\d-\d\d) (\d\d:\d\d)/(?:(\d{4}-\d\d-\d\d) )?(\d\d:\d\d)", text
        )
        try:
            if match is None:
                raise ValueError
            first, start, last, end = match.groups()
            span = Span(
                datetime.fromisoformat(f"{first}T{start}"),
                datetime.fromisoformat(f"{last or first}T{end}"),
            )
        except ValueError:
            self.fail(key, f'{value!r} is not a busy time like "2027-03-01 09:00/12:00"')
            return None
        if span.end <= span.start:
            self.fail(key, f"{value!r} ends before it starts")
            return None
        return span

    def _weekly(self, value: Any, key: str) -> WeeklyBusy | None:
        text = value if isinstance(value, str) else ""
        match = re.fullmatch(r"(\w{3}) (\d\d:\d\d-\d\d:\d\d)", text)
        if match is None or match.group(1) not in WEEKDAYS:
            self.fail(key, f'{value!r} is not a weekly busy time like "Mon 09:00-12:00"')
            return None
        block = self._block(match.group(2), key)
        if block is None:
            return None
        return WeeklyBusy(WEEKDAYS.index(match.group(1)), *block)

    def _room(self, table: Any, key: str) -> Room | None:
        if not isinstance(table, dict):
            self.fail(key, "must be a table")
            return None
        self._known_keys(table, key, ("id", "capacity"))
        room_id = self.field(table, key, "id", str)
        capacity = self.field(table, key, "capacity", int)
        if capacity is not None and capacity < 1:
            self.fail(f"{key}.capacity", "must be at least 1")
            return None
        if room_id is None or capacity is None:
            return None
        return Room(room_id, capacity)

    def _window(self, value: Any, key: str) -> MonthRange | None:
        text = value if isinstance(value, str) else ""
        parts = text.split("-")
        if len(parts) == 1:
            parts = [text, text]
        if len(parts) != 2 or not all(p in MONTHS for p in parts):
            self.fail(key, f'{value!r} is not a month range like "Jan-Mar" (or one month, "Jun")')
            return None
        return MonthRange(MONTHS.index(parts[0]) + 1, MONTHS.index(parts[1]) + 1)

    def _attendees(
        self, value: Any, key: str, people: set[str], roles: dict[str, list[str]]
    ) -> list[str] | None:
        if not isinstance(value, str):
            self.fail(key, 'must be a person\'s id or "role:NAME"')
            return None
        if value.startswith("role:"):
            role = value.removeprefix("role:")
            if role not in roles:
                self.fail(key, f"no one has the role {role!r} (roles: {self._role_names})")
                return None
            return self._counted(key, roles[role])
        if value not in people:
            self.fail(key, f"{value!r} is not in [[people]]")
            return None
        return self._counted(key, [value])

    def _counted(self, key: str, attendees: list[str]) -> list[str] | None:
        """`attendees`, while the file's total stays within MAX_ATTENDEES;
        past it, one mistake and no more names."""
        before = self._named
        self._named += len(attendees)
        if self._named <= program_limits.MAX_ATTENDEES:
            return attendees
        if before <= program_limits.MAX_ATTENDEES:
            self.fail(key, program_limits.attendees_words())
        return None

    def _activity(
        self, table: Any, key: str, people: set[str], roles: dict[str, list[str]]
    ) -> Activity | None:
        if not isinstance(table, dict):
            self.fail(key, "must be a table")
            return None
        self._known_keys(table, key, ACTIVITY_KEYS)
        activity_id = self.field(table, key, "id", str)
        title = self.field(table, key, "title", str, activity_id or "")
        kind = self._choice(table, key, "kind", Kind, "meeting")
        cadence_text = table.get("cadence", "once")
        times = 1
        cadence: Cadence | None
        if isinstance(cadence_text, int) and not isinstance(cadence_text, bool):
            cadence, times = Cadence.TIMES, cadence_text
            if not 1 <= times <= 366:
                self.fail(f"{key}.cadence", "a number of times must be between 1 and 366")
        else:
            cadence = self._choice(table, key, "cadence", Cadence, "once")
            if cadence is Cadence.TIMES:
                self.fail(f"{key}.cadence", "give the number of times itself, e.g. cadence = 6")
        before = len(self.mistakes)
        windows = self.each(table, key, "windows", self._window)
        if "windows" not in table:
            windows = [MonthRange(1, 12)]
        elif not windows and len(self.mistakes) == before:  # no window reported wrong
            self.fail(f"{key}.windows", "must list at least one month range")
        if cadence is Cadence.TWICE_A_YEAR and len(windows) not in (1, 2):
            self.fail(f"{key}.windows", "twice a year takes one window, or two (one each)")
        duration = self.field(table, key, "duration_minutes", int)
        if duration is not None and not 15 <= duration <= MAX_DURATION_MINUTES:
            self.fail(f"{key}.duration_minutes", f"must be 15 to {MAX_DURATION_MINUTES} minutes")
        required = self._people_list(table, key, "required", people, roles)
        optional = self._people_list(table, key, "optional", people, roles)
        audience = self._people_list(table, key, "audience", people, roles)
        if "required" not in table:
            self.fail(f"{key}.required", 'is missing: who must attend (ids or "role:NAME")')
        needs_room = self.field(table, key, "needs_room", bool, True)
        room_capacity = self.field(table, key, "room_capacity", int, 0)
        capacity = self.field(table, key, "capacity", int, 0)
        gap = self.field(table, key, "min_gap_days", int, 42 if cadence is Cadence.QUARTERLY else 0)
        for name, value in (
            ("room_capacity", room_capacity),
            ("capacity", capacity),
            ("min_gap_days", gap),
        ):
            if value is not None and value < 0:
                self.fail(f"{key}.{name}", "must not be negative")
        preference = self._preference(table, key)
        if cadence is Cadence.QUARTERLY and windows:
            quarters = {(m - 1) // 3 for w in windows for m in w.months()}
            missing = [f"Q{q + 1}" for q in range(4) if q not in quarters]
            if missing:
                self.fail(
                    f"{key}.windows",
                    f"a quarterly activity's windows never open in {', '.join(missing)}",
                )
        if None in (activity_id, kind, cadence, duration, needs_room, room_capacity, capacity, gap):
            return None
        assert activity_id is not None and title is not None and kind is not None
        assert cadence is not None and duration is not None and needs_room is not None
        assert room_capacity is not None and capacity is not None and gap is not None
        named = set(required)
        return Activity(
            id=activity_id,
            title=title,
            kind=kind,
            cadence=cadence,
            windows=tuple(windows),
            duration_minutes=duration,
            required=tuple(dict.fromkeys(required)),
            optional=tuple(p for p in dict.fromkeys(optional) if p not in named),
            needs_room=needs_room,
            room_capacity=room_capacity,
            capacity=capacity,
            audience=tuple(dict.fromkeys(audience)),
            times=times,
            min_gap_days=gap,
            preference=preference,
        )

    def _people_list(
        self,
        table: dict[str, Any],
        key: str,
        name: str,
        people: set[str],
        roles: dict[str, list[str]],
    ) -> list[str]:
        groups = self.each(table, key, name, lambda v, k: self._attendees(v, k, people, roles))
        return [p for group in groups for p in group]

    def _choice(
        self,
        table: dict[str, Any],
        key: str,
        name: str,
        kind: type[Cadence] | type[Kind],
        default: str,
    ) -> Any:
        value = table.get(name, default)
        try:
            return kind(value)
        except ValueError:
            options = ", ".join(repr(k.value) for k in kind if k.value != "times")
            self.fail(f"{key}.{name}", f"{value!r} is not one of {options}")
            return None

    def _preference(self, table: dict[str, Any], key: str) -> Preference:
        part = table.get("part_of_day")
        if part is not None and part not in ("morning", "afternoon"):
            self.fail(f"{key}.part_of_day", f'{part!r} is not "morning" or "afternoon"')
            part = None
        weekdays = []
        given = table.get("weekdays", [])
        if not isinstance(given, list):
            self.fail(f"{key}.weekdays", "must be a list")
            given = []
        for n, day in enumerate(given):
            if day in WEEKDAYS:
                weekdays.append(WEEKDAYS.index(day))
            else:
                self.fail(f"{key}.weekdays[{n}]", f"{day!r} is not one of {', '.join(WEEKDAYS)}")
        earlier = self.field(table, key, "earlier", bool, False)
        return Preference(part, tuple(weekdays), bool(earlier))
