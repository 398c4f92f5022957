"""The matching benchmark's two file formats as typed values.

`eap-match-instance/1` (the work: horizon, rules, weights, providers,
counselors, agencies, cases; and, our extension for re-planning, the
sessions already booked that may move, see booked.py) and
`eap-match-schedule/1` (an answer: sessions, unserved cases, solver
facts), as FORMAT.md of the benchmark defines them.

Times in both files are wall-clock `YYYY-MM-DDTHH:MM` in the instance's
timezone; they load as aware datetimes in that zone, so comparisons and
differences are wall-clock ones, as the format means. Money and hours load
as exact `Fraction`s so that budget and cap checks never hinge on float
rounding.

Loading checks structure and references and refuses the first malformed
field with a `FormatError` naming it (`cases[3].minutes`). Whether a
schedule keeps the hard rules is not a loading matter: that is `verify`.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.rules.cost import session_cost_ntd
from services.rules.office_time import iso_week
from services.rules.sessions import (
    CRISIS_DEADLINE_HOURS,
    MAX_SESSION_MINUTES,
    MIN_SESSION_MINUTES,
    WEEKLY_SESSION_LIMIT,
)

INSTANCE_FORMAT = "eap-match-instance/1"
SCHEDULE_FORMAT = "eap-match-schedule/1"
TIME_FORMAT = "%Y-%m-%dT%H:%M"

Source = str | os.PathLike[str] | Mapping[str, object]

# The seeds' rules and FORMAT.md's example weights, as instance JSON: what
# generated instances and match-job snapshots use unless told otherwise.
SEED_RULES: Mapping[str, int] = {
    "max_sessions_per_week": WEEKLY_SESSION_LIMIT,
    "min_session_minutes": MIN_SESSION_MINUTES,
    "max_session_minutes": MAX_SESSION_MINUTES,
    "crisis_deadline_hours": CRISIS_DEADLINE_HOURS,
}
SEED_WEIGHTS: Mapping[str, int] = {
    "crisis_session": 1000,
    "session": 100,
    "continuity": 10,
    "wait_day": 1,
    "cost_per_kntd": 1,
}
T = TypeVar("T")


class FormatError(ValueError):
    """A file breaks its format; `field` is the JSON path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CaseKind(StrEnum):
    GENERAL = "general"
    CRISIS = "crisis"
    INVOLUNTARY = "involuntary"


@dataclass(frozen=True)
class Interval:
    """`[start, end)` in the instance's timezone."""

    start: datetime
    end: datetime

    def holds(self, start: datetime, end: datetime) -> bool:
        return self.start <= start and end <= self.end


@dataclass(frozen=True)
class Horizon:
    start: datetime  # midnight of a Monday
    weeks: int

    @cached_property
    def end(self) -> datetime:
        return self.start + timedelta(weeks=self.weeks)


@dataclass(frozen=True)
class Rules:
    max_sessions_per_week: int
    min_session_minutes: int
    max_session_minutes: int
    crisis_deadline_hours: Fraction

    @property
    def crisis_deadline(self) -> timedelta:
        return timedelta(seconds=float(self.crisis_deadline_hours * 3600))


@dataclass(frozen=True)
class Weights:
    crisis_session: Fraction
    session: Fraction
    continuity: Fraction
    wait_day: Fraction
    cost_per_kntd: Fraction
    move: Fraction = Fraction(0)  # per booked session moved (booked.py); not in FORMAT.md


@dataclass(frozen=True)
class Provider:
    id: str
    hourly_rate_ntd: Fraction
    hours_cap: Fraction

    def cost(self, minutes: int) -> int:
        """A session's cost in whole NT$, as the quota charges it."""
        return session_cost_ntd(self.hourly_rate_ntd, minutes)


@dataclass(frozen=True)
class Counselor:
    id: str
    provider: str
    specialties: tuple[str, ...]
    modalities: tuple[str, ...]
    max_sessions_per_day: int
    availability: tuple[Interval, ...]


@dataclass(frozen=True)
class Agency:
    id: str
    budget_ntd: Fraction


@dataclass(frozen=True)
class Case:
    id: str
    employee: str
    agency: str
    category: str
    kind: CaseKind
    sessions: int
    minutes: int
    modalities: tuple[str, ...]
    submitted: datetime
    availability: tuple[Interval, ...]
    preferred_counselor: str | None
    excluded_counselors: tuple[str, ...]
    employee_remaining_hours: Fraction

    def can_see(self, counselor: Counselor) -> bool:
        """Rule 1 of FORMAT.md, for some modality both sides accept."""
        return (
            self.category in counselor.specialties
            and counselor.id not in self.excluded_counselors
            and any(m in counselor.modalities for m in self.modalities)
        )


@dataclass(frozen=True)
class Booked:
    """A session the case holds already, which a re-plan may move within
    its ISO week (booked.py says what that means for a schedule)."""

    booking: str
    case: str
    counselor: str
    start: datetime
    modality: str


@dataclass(frozen=True)
class Instance:
    name: str | None
    timezone: str
    horizon: Horizon
    slot_minutes: int
    rules: Rules
    weights: Weights
    providers: tuple[Provider, ...]
    counselors: tuple[Counselor, ...]
    agencies: tuple[Agency, ...]
    cases: tuple[Case, ...]
    booked: tuple[Booked, ...] = ()  # movable sessions held already (booked.py)

    # cached_property writes the instance __dict__ directly, which a frozen
    # dataclass allows; the lookups are built once per instance.
    @cached_property
    def provider_by_id(self) -> dict[str, Provider]:
        return {p.id: p for p in self.providers}

    @cached_property
    def counselor_by_id(self) -> dict[str, Counselor]:
        return {c.id: c for c in self.counselors}

    @cached_property
    def agency_by_id(self) -> dict[str, Agency]:
        return {a.id: a for a in self.agencies}

    @cached_property
    def case_by_id(self) -> dict[str, Case]:
        return {c.id: c for c in self.cases}

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def rate_of(self, counselor: Counselor) -> Fraction:
        return self.provider_by_id[counselor.provider].hourly_rate_ntd

    def session_cost(self, counselor: Counselor, minutes: int) -> int:
        """What a session with `counselor` costs, in whole NT$ (rules.cost)."""
        return self.provider_by_id[counselor.provider].cost(minutes)

    def qualified(self, case: Case) -> list[Counselor]:
        """The counselors rule 1 allows for `case` (worked out once per case)."""
        found = self._qualified.get(case.id)
        if found is None:
            found = self._qualified[case.id] = [k for k in self.counselors if case.can_see(k)]
        return found

    @cached_property
    def _qualified(self) -> dict[str, list[Counselor]]:
        return {}

    def starts(self, case: Case, counselor: Counselor) -> list[datetime]:
        """Slot-aligned starts where the whole session fits inside one
        interval of the counselor and one of the case, within the horizon,
        not before the case was submitted (rule 2), earliest first."""
        origin = self.horizon.start
        return [origin + timedelta(minutes=m) for m in self.start_minutes(case, counselor)]

    def minute_of(self, moment: datetime) -> int:
        """Minutes from the horizon's start (a midnight) to `moment`."""
        return int((moment - self.horizon.start).total_seconds() // 60)

    def start_minutes(self, case: Case, counselor: Counselor) -> list[int]:
        """`starts`, in minutes from the horizon's start: whole numbers are
        what a search that asks for them thousands of times can afford."""
        if not self.rules.min_session_minutes <= case.minutes <= self.rules.max_session_minutes:
            return []  # a length the rules forbid fits nowhere
        length, step = case.minutes, self.slot_minutes
        floor = max(self.minute_of(case.submitted), 0)
        ceiling = self.horizon.weeks * 7 * 1440
        windows, window_starts, longest = self._windows_of(counselor)
        starts: set[int] = set()
        for their_start, their_end in self._minutes_of(case):
            # Only the counselor's intervals that can overlap this one.
            first = bisect.bisect_left(window_starts, their_start - longest)
            last = bisect.bisect_left(window_starts, their_end)
            for my_start, my_end in windows[first:last]:
                begin = max(my_start, their_start, floor)
                end = min(my_end, their_end, ceiling)
                if begin + length > end:
                    continue
                offset = (begin % 1440) % step  # slots count from midnight
                start = begin if not offset else begin + (step - offset)
                starts.update(range(start, end - length + 1, step))
        return sorted(starts)

    def _minutes_of(self, case: Case) -> list[tuple[int, int]]:
        found = self._case_minutes.get(case.id)
        if found is None:
            found = self._case_minutes[case.id] = [
                (self.minute_of(iv.start), self.minute_of(iv.end)) for iv in case.availability
            ]
        return found

    @cached_property
    def _case_minutes(self) -> dict[str, list[tuple[int, int]]]:
        return {}

    def _windows_of(self, counselor: Counselor) -> tuple[list[tuple[int, int]], list[int], int]:
        """The counselor's intervals in minutes by start, their starts, and
        the longest."""
        found = self._windows.get(counselor.id)
        if found is None:
            ordered = sorted(
                (self.minute_of(iv.start), self.minute_of(iv.end)) for iv in counselor.availability
            )
            longest = max((end - start for start, end in ordered), default=0)
            found = self._windows[counselor.id] = (ordered, [s for s, _ in ordered], longest)
        return found

    @cached_property
    def _windows(self) -> dict[str, tuple[list[tuple[int, int]], list[int], int]]:
        return {}

    def reference_time(self, case: Case) -> datetime:
        """Where waiting and the crisis deadline count from."""
        return max(case.submitted, self.horizon.start)


@dataclass(frozen=True)
class Session:
    case: str
    counselor: str
    start: datetime
    minutes: int
    modality: str

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)


@dataclass(frozen=True)
class Unserved:
    case: str
    missing: int
    reason: str  # plain words
    code: str = ""  # a stable reason code (see reasons.py), when known


@dataclass(frozen=True)
class Schedule:
    instance: str | None
    sessions: tuple[Session, ...]
    unserved: tuple[Unserved, ...] = ()
    solver: Mapping[str, object] = field(default_factory=dict)


# --- reading ---------------------------------------------------------------


class _Node:
    """A JSON value with the path that leads to it, for error messages."""

    def __init__(self, value: object, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, message: str) -> FormatError:
        return FormatError(self.path or "(document)", message)

    def _object(self) -> Mapping[str, object]:
        if not isinstance(self.value, Mapping):
            raise self.fail("must be an object")
        return self.value

    def has(self, key: str) -> bool:
        return key in self._object()

    def get(self, key: str) -> _Node:
        obj = self._object()
        path = f"{self.path}.{key}" if self.path else key
        if key not in obj:
            raise FormatError(path, "is missing")
        return _Node(obj[key], path)

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            raise self.fail("must be a list")
        return [_Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def text(self) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.fail("must be a non-empty string")
        return self.value

    def optional_text(self) -> str | None:
        return None if self.value is None else self.text()

    def integer(self, minimum: int = 0) -> int:
        # bool is an int to Python but never a count in these files
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail("must be an integer")
        if self.value < minimum:
            raise self.fail(f"must be at least {minimum}")
        return self.value

    def number(self, minimum: Fraction | None = Fraction(0)) -> Fraction:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.fail("must be a number")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise self.fail("must be a finite number")
        # repr() keeps the decimal the file wrote: 0.1 hours stays 1/10
        exact = (
            Fraction(repr(self.value)) if isinstance(self.value, float) else Fraction(self.value)
        )
        if minimum is not None and exact < minimum:
            raise self.fail(f"must be at least {minimum}")
        return exact

    def texts(self) -> tuple[str, ...]:
        return tuple(n.text() for n in self.items())

    def time(self, tz: ZoneInfo) -> datetime:
        raw = self.text()
        try:
            parsed = datetime.strptime(raw, TIME_FORMAT)
        except ValueError:
            parsed = None
        # strptime also takes "2027-3-2T9:00"; the format says zero-padded
        if parsed is None or parsed.strftime(TIME_FORMAT) != raw:
            raise self.fail(f"must be a time YYYY-MM-DDTHH:MM, not {raw!r}")
        return parsed.replace(tzinfo=tz)

    def interval(self, tz: ZoneInfo) -> Interval:
        pair = self.items()
        if len(pair) != 2:
            raise self.fail("must be a [start, end] pair")
        start, end = pair[0].time(tz), pair[1].time(tz)
        if not start < end:
            raise self.fail("must end after it starts")
        return Interval(start, end)

    def intervals(self, tz: ZoneInfo) -> tuple[Interval, ...]:
        return tuple(n.interval(tz) for n in self.items())


def _read_json(source: Source) -> _Node:
    if isinstance(source, Mapping):
        return _Node(source, "")
    try:
        value = json.loads(Path(source).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError("(document)", f"not JSON in UTF-8: {e}") from e
    return _Node(value, "")


def _check_format(root: _Node, expected: str) -> None:
    node = root.get("format")
    if node.value != expected:
        raise node.fail(f"must be {expected!r}, not {node.value!r}")


def _unique(
    nodes: list[_Node], build: Callable[[_Node], T], key: Callable[[T], str], name: str = "id"
) -> tuple[T, ...]:
    seen: set[str] = set()
    out: list[T] = []
    for node in nodes:
        item = build(node)
        if key(item) in seen:
            raise node.get(name).fail(f"duplicate {name} {key(item)!r}")
        seen.add(key(item))
        out.append(item)
    return tuple(out)


def _horizon(node: _Node, tz: ZoneInfo) -> Horizon:
    start_node = node.get("start")
    raw = start_node.text()
    try:
        # a bare date, as the format writes it; midnight also passes
        start = datetime.fromisoformat(raw)
    except ValueError as e:
        raise start_node.fail(f"must be a date YYYY-MM-DD, not {raw!r}") from e
    if start.time() != datetime.min.time() or start.tzinfo is not None:
        raise start_node.fail("must be a date (the horizon starts at midnight)")
    if start.isoweekday() != 1:
        raise start_node.fail(f"must be a Monday; {raw} is not")
    return Horizon(start.replace(tzinfo=tz), node.get("weeks").integer(minimum=1))


def _rules(node: _Node) -> Rules:
    rules = Rules(
        max_sessions_per_week=node.get("max_sessions_per_week").integer(),
        min_session_minutes=node.get("min_session_minutes").integer(minimum=1),
        max_session_minutes=node.get("max_session_minutes").integer(minimum=1),
        crisis_deadline_hours=node.get("crisis_deadline_hours").number(),
    )
    if rules.min_session_minutes > rules.max_session_minutes:
        raise node.get("min_session_minutes").fail("must not exceed max_session_minutes")
    return rules


def _weights(node: _Node) -> Weights:
    def w(name: str) -> Fraction:
        # a negative weight is odd but well defined, so not refused
        return node.get(name).number(minimum=None)

    return Weights(
        crisis_session=w("crisis_session"),
        session=w("session"),
        continuity=w("continuity"),
        wait_day=w("wait_day"),
        cost_per_kntd=w("cost_per_kntd"),
        move=w("move") if node.has("move") else Fraction(0),
    )


def _provider(node: _Node) -> Provider:
    return Provider(
        id=node.get("id").text(),
        hourly_rate_ntd=node.get("hourly_rate_ntd").number(),
        hours_cap=node.get("hours_cap").number(),
    )


def _counselor(node: _Node, tz: ZoneInfo) -> Counselor:
    return Counselor(
        id=node.get("id").text(),
        provider=node.get("provider").text(),
        specialties=node.get("specialties").texts(),
        modalities=node.get("modalities").texts(),
        max_sessions_per_day=node.get("max_sessions_per_day").integer(),
        availability=node.get("availability").intervals(tz),
    )


def _agency(node: _Node) -> Agency:
    return Agency(id=node.get("id").text(), budget_ntd=node.get("budget_ntd").number())


def _case(node: _Node, tz: ZoneInfo) -> Case:
    kind_node = node.get("kind")
    try:
        kind = CaseKind(kind_node.text())
    except ValueError as e:
        choices = ", ".join(k.value for k in CaseKind)
        raise kind_node.fail(f"must be one of {choices}") from e
    return Case(
        id=node.get("id").text(),
        employee=node.get("employee").text(),
        agency=node.get("agency").text(),
        category=node.get("category").text(),
        kind=kind,
        sessions=node.get("sessions").integer(),
        minutes=node.get("minutes").integer(minimum=1),
        modalities=node.get("modalities").texts(),
        submitted=node.get("submitted").time(tz),
        availability=node.get("availability").intervals(tz),
        preferred_counselor=node.get("preferred_counselor").optional_text(),
        excluded_counselors=node.get("excluded_counselors").texts(),
        employee_remaining_hours=node.get("employee_remaining_hours").number(),
    )


def _booked(node: _Node, tz: ZoneInfo) -> Booked:
    return Booked(
        booking=node.get("booking").text(),
        case=node.get("case").text(),
        counselor=node.get("counselor").text(),
        start=node.get("start").time(tz),
        modality=node.get("modality").text(),
    )


def _check_references(inst: Instance) -> None:
    for i, k in enumerate(inst.counselors):
        if k.provider not in inst.provider_by_id:
            raise FormatError(f"counselors[{i}].provider", f"unknown provider {k.provider!r}")
    entitlement: dict[str, Fraction] = {}
    for i, c in enumerate(inst.cases):
        if c.agency not in inst.agency_by_id:
            raise FormatError(f"cases[{i}].agency", f"unknown agency {c.agency!r}")
        if c.preferred_counselor is not None and c.preferred_counselor not in inst.counselor_by_id:
            raise FormatError(
                f"cases[{i}].preferred_counselor", f"unknown counselor {c.preferred_counselor!r}"
            )
        for j, e in enumerate(c.excluded_counselors):
            if e not in inst.counselor_by_id:
                raise FormatError(
                    f"cases[{i}].excluded_counselors[{j}]", f"unknown counselor {e!r}"
                )
        # The entitlement belongs to the employee (rule 4 sums all their
        # cases), so two cases that disagree on it leave rule 4 undefined.
        known = entitlement.setdefault(c.employee, c.employee_remaining_hours)
        if known != c.employee_remaining_hours:
            raise FormatError(
                f"cases[{i}].employee_remaining_hours",
                f"{c.employee_remaining_hours} differs from {known} on another case "
                "of the same employee",
            )
    weeks: set[tuple[str, tuple[int, int]]] = set()
    for i, b in enumerate(inst.booked):
        if b.case not in inst.case_by_id:
            raise FormatError(f"booked[{i}].case", f"unknown case {b.case!r}")
        if b.counselor not in inst.counselor_by_id:
            raise FormatError(f"booked[{i}].counselor", f"unknown counselor {b.counselor!r}")
        # A move keeps the session in its week: two in one week could not
        # tell which of the week's sessions is which.
        week = (b.case, iso_week(b.start))
        if week in weeks:
            raise FormatError(f"booked[{i}].start", "a second booked session of the case that week")
        weeks.add(week)


def load_instance(source: Source) -> Instance:
    """Read an `eap-match-instance/1` file (a path) or its parsed JSON (a dict)."""
    root = _read_json(source)
    _check_format(root, INSTANCE_FORMAT)
    tz_node = root.get("timezone")
    try:
        tz = ZoneInfo(tz_node.text())
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise tz_node.fail(f"unknown timezone {tz_node.value!r}") from e
    inst = Instance(
        name=root.get("name").optional_text() if root.has("name") else None,
        timezone=tz.key,
        horizon=_horizon(root.get("horizon"), tz),
        slot_minutes=root.get("slot_minutes").integer(minimum=1),
        rules=_rules(root.get("rules")),
        weights=_weights(root.get("weights")),
        providers=_unique(root.get("providers").items(), _provider, lambda p: p.id),
        counselors=_unique(
            root.get("counselors").items(), lambda n: _counselor(n, tz), lambda k: k.id
        ),
        agencies=_unique(root.get("agencies").items(), _agency, lambda a: a.id),
        cases=_unique(root.get("cases").items(), lambda n: _case(n, tz), lambda c: c.id),
        booked=_unique(
            root.get("booked").items() if root.has("booked") else [],
            lambda n: _booked(n, tz),
            lambda b: b.booking,
            "booking",
        ),
    )
    _check_references(inst)
    return inst


def _session(node: _Node, tz: ZoneInfo) -> Session:
    return Session(
        case=node.get("case").text(),
        counselor=node.get("counselor").text(),
        start=node.get("start").time(tz),
        minutes=node.get("minutes").integer(minimum=1),
        modality=node.get("modality").text(),
    )


def _unserved(node: _Node) -> Unserved:
    reason = node.get("reason") if node.has("reason") else None
    return Unserved(
        case=node.get("case").text(),
        missing=node.get("missing").integer(minimum=1),
        reason="" if reason is None or reason.value is None else reason.text(),
        code=node.get("code").text() if node.has("code") else "",
    )


def load_schedule(source: Source, instance: Instance) -> Schedule:
    """Read an `eap-match-schedule/1` file or dict; the instance gives the
    timezone its wall-clock times are in. Ids are not resolved here: a
    session naming an unknown case is a rule break for `verify` to report."""
    root = _read_json(source)
    _check_format(root, SCHEDULE_FORMAT)
    solver_node = root.get("solver") if root.has("solver") else _Node({}, "solver")
    if not isinstance(solver_node.value, Mapping):
        raise solver_node.fail("must be an object")
    return Schedule(
        instance=root.get("instance").optional_text() if root.has("instance") else None,
        sessions=tuple(_session(n, instance.tz) for n in root.get("sessions").items()),
        unserved=tuple(
            _unserved(n) for n in (root.get("unserved").items() if root.has("unserved") else [])
        ),
        solver=dict(solver_node.value),
    )


def format_time(moment: datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def dump_schedule(schedule: Schedule) -> dict[str, object]:
    """The schedule as JSON-ready data, in the order the format shows."""
    return {
        "format": SCHEDULE_FORMAT,
        "instance": schedule.instance,
        "sessions": [
            {
                "case": s.case,
                "counselor": s.counselor,
                "start": format_time(s.start),
                "minutes": s.minutes,
                "modality": s.modality,
            }
            for s in schedule.sessions
        ],
        "unserved": [
            {"case": u.case, "missing": u.missing, "reason": u.reason}
            | ({"code": u.code} if u.code else {})
            for u in schedule.unserved
        ],
        "solver": dict(schedule.solver),
    }
