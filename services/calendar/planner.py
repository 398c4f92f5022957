"""Places a year's programme on the office calendar with CP-SAT, and says
in plain words why anything it could not place stayed out.

Time is counted in minutes from 1 January 00:00 of the plan's year, local
(Asia/Taipei has no daylight saving). Each occurrence of an activity gets
the starts that its own rules allow, worked out before the model is built:
inside its window, on an office day, within one block of office hours, on
the slot grid, with every required attendee free of their own busy time.
The model then chooses one start per occurrence (or leaves it out, which
costs far more than any wish) so that, grouped by the rule they encode:

- required attendees are never in two events at once, nor in more than
  `max_events_per_person_per_day` events a day;
- rooms are never double-booked, and each event's room seats enough;
- occurrences of one activity keep `min_gap_days` apart (quarterly
  meetings: each in its own quarter and six weeks apart);

and, softly, optional attendees are free, preferred times are met, events
asked to come early do, and repeated events spread through their window.
"""

from __future__ import annotations

import itertools
import time as clock
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
from ortools.sat.python import cp_model

from services.calendar import unplaced as why
from services.calendar.program import Activity, Person, Program
from services.calendar.unplaced import Unplaced
from services.office_calendar import OfficeCalendar, load_shipped

DAY = 1440
OPTIONAL_TIERS = 6  # levels of "at least k optional attendees free" per event


@dataclass(frozen=True)
class Event:
    activity: str
    occurrence: int  # 1, 2, ... within the activity
    start: datetime
    end: datetime
    room: str | None
    required: tuple[str, ...]
    optional_free: tuple[str, ...]  # optional attendees free at that time
    uid: str  # stable across re-plans and exports of the same programme


@dataclass(frozen=True)
class Plan:
    program: Program
    events: tuple[Event, ...]
    unplaced: tuple[Unplaced, ...]
    status: str
    seconds: float


@dataclass(eq=False)  # keyed by identity
class _Occurrence:
    activity: Activity
    number: int  # 1-based
    days: list[date]
    starts: list[int] = field(default_factory=list)  # minutes from the year's start
    rooms: list[str] = field(default_factory=list)
    unplaceable: Unplaced | None = None

    @property
    def label(self) -> str:
        many = self.activity.occurrences() > 1
        return f"{self.activity.id} #{self.number}" if many else self.activity.id


class _BusyMasks:
    """Each person's busy time as a bit per slot of the year: whether a
    group is free for an event is then one AND, not a scan of intervals."""

    def __init__(self, program: Program) -> None:
        self._program = program
        self._slot = program.slot_minutes
        self._origin = datetime(program.year, 1, 1)
        self._masks: dict[str, int] = {}
        self._counts: dict[tuple[tuple[str, ...], int], np.ndarray] = {}
        days = (date(program.year + 1, 1, 1) - date(program.year, 1, 1)).days
        self._slots_in_year = days * DAY // self._slot

    def _index(self, moment: datetime) -> int:
        return int((moment - self._origin).total_seconds() // 60) // self._slot

    def of(self, person: Person) -> int:
        mask = self._masks.get(person.id)
        if mask is None:
            mask = 0
            for span in person.busy:
                first, last = self._index(span.start), -(-self._minutes(span.end) // self._slot)
                if last > 0:
                    mask |= ((1 << (last - max(first, 0))) - 1) << max(first, 0)
            day = self._origin.date()
            while day.year == self._program.year:
                for weekly in person.weekly_busy:
                    if day.weekday() == weekly.weekday:
                        first = self._index(datetime.combine(day, weekly.start))
                        last = -(-self._minutes(datetime.combine(day, weekly.end)) // self._slot)
                        mask |= ((1 << (last - first)) - 1) << first
                day += timedelta(days=1)
            self._masks[person.id] = mask
        return mask

    def _minutes(self, moment: datetime) -> int:
        return int((moment - self._origin).total_seconds() // 60)

    def free_counts(self, people: Sequence[str], starts: Sequence[int], minutes: int) -> list[int]:
        """How many of `people` are free for `minutes` from each of `starts`:
        one vectorised pass over their busy slots, kept per group and length."""
        key = (tuple(people), minutes)
        known = self._counts.get(key)
        if known is None:
            slots = self._slots_in_year + 1
            busy = np.zeros((len(people), slots + 1), dtype=np.int32)
            for row, person_id in enumerate(people):
                mask = self.of(self._program.person(person_id)) & ((1 << slots) - 1)
                bits = np.unpackbits(
                    np.frombuffer(mask.to_bytes(slots // 8 + 1, "little"), dtype=np.uint8),
                    bitorder="little",
                )[:slots]
                np.cumsum(bits, out=busy[row, 1:])
            known = self._counts[key] = busy
        first = np.asarray(starts) // self._slot
        length = -(-minutes // self._slot)
        last = np.minimum(first + length, known.shape[1] - 1)
        taken = (known[:, last] - known[:, first]) > 0
        return [int(c) for c in len(people) - taken.sum(axis=0)]

    def free(self, mask: int, start: int, minutes: int) -> bool:
        first = start // self._slot
        length = -(-(start + minutes) // self._slot) - first
        return not (mask >> first) & ((1 << length) - 1)


def plan_program(
    program: Program,
    calendar: OfficeCalendar | None = None,
    time_limit: float = 20.0,
    workers: int = 2,
) -> Plan:
    began = clock.monotonic()
    calendar = calendar or load_shipped()
    masks = _BusyMasks(program)
    occurrences = [
        _Occurrence(activity, n + 1, days)
        for activity in program.activities
        for n, days in enumerate(activity.occurrence_days(program.year))
    ]
    for occ in occurrences:
        _candidates(program, calendar, masks, occ)
    placeable = [o for o in occurrences if o.unplaceable is None]
    chosen, status = _solve(program, placeable, masks, time_limit, workers)
    origin = datetime(program.year, 1, 1)
    events = []
    for occ, (start, room) in chosen.items():
        at = origin + timedelta(minutes=start)
        optional_free = tuple(
            p
            for p in occ.activity.optional
            if masks.free(masks.of(program.person(p)), start, occ.activity.duration_minutes)
        )
        events.append(
            Event(
                occ.activity.id,
                occ.number,
                at,
                at + timedelta(minutes=occ.activity.duration_minutes),
                room,
                occ.activity.required,
                optional_free,
                event_uid(program, occ.activity.id, occ.number),
            )
        )
    events.sort(key=lambda e: (e.start, e.activity, e.occurrence))
    unplaced = [o.unplaceable for o in occurrences if o.unplaceable is not None]
    left_out = [o for o in placeable if o not in chosen]
    proven = status == "OPTIMAL"
    unplaced += [_why_left_out(program, occ, chosen, proven) for occ in left_out]
    return Plan(program, tuple(events), tuple(unplaced), status, clock.monotonic() - began)


def event_uid(program: Program, activity_id: str, occurrence: int) -> str:
    """The same event of the same programme keeps its UID across re-plans,
    so that calendars re-importing an export update it in place."""
    slug = "".join(c if c.isalnum() else "-" for c in program.name.lower()).strip("-")
    return f"{program.year}-{activity_id}-{occurrence}.{slug}@eap-calendar"


# --- what each occurrence may do, worked out before the model ----------------


def _candidates(
    program: Program, calendar: OfficeCalendar, masks: _BusyMasks, occ: _Occurrence
) -> None:
    activity = occ.activity
    windows = ", ".join(str(w) for w in activity.windows)
    office_days = [d for d in occ.days if calendar.is_office_day(d)]
    if not office_days:
        occ.unplaceable = Unplaced(
            activity.id,
            occ.number,
            "WINDOW_CLOSED",
            why.window_closed(occ.label, occ.days, windows, program.year),
        )
        return
    origin = date(program.year, 1, 1)
    minutes = activity.duration_minutes
    grid: list[int] = []
    for day in office_days:
        base = (day - origin).days * DAY
        for begin, end in program.office_hours.blocks:
            first = begin.hour * 60 + begin.minute
            first += -first % program.slot_minutes
            last = end.hour * 60 + end.minute - minutes
            grid.extend(base + m for m in range(first, last + 1, program.slot_minutes))
    if not grid:
        occ.unplaceable = Unplaced(
            activity.id,
            occ.number,
            "LONGER_THAN_OFFICE_HOURS",
            why.too_long(occ.label, minutes, _hours_words(program)),
        )
        return
    required = [program.person(p) for p in activity.required]
    together = 0
    for person in required:
        together |= masks.of(person)
    occ.starts = [s for s in grid if masks.free(together, s, minutes)]
    if not occ.starts:
        occ.unplaceable = _busy_explanation(program, masks, occ, grid, required)
        return
    if activity.needs_room:
        seats = activity.seats()
        occ.rooms = [r.id for r in program.rooms if r.capacity >= seats]
        if not occ.rooms:
            largest = max((r.capacity for r in program.rooms), default=0)
            occ.unplaceable = Unplaced(
                activity.id,
                occ.number,
                "NO_ROOM_BIG_ENOUGH",
                why.no_room(occ.label, seats, largest),
            )
            return


def _busy_explanation(
    program: Program,
    masks: _BusyMasks,
    occ: _Occurrence,
    grid: list[int],
    required: list[Person],
) -> Unplaced:
    minutes = occ.activity.duration_minutes
    alone = [p.id for p in required if not any(masks.free(masks.of(p), s, minutes) for s in grid)]
    text = why.busy(occ.label, alone, [p.id for p in required], minutes, occ.days)
    return Unplaced(occ.activity.id, occ.number, "ATTENDEE_BUSY", text)


# --- the model -------------------------------------------------------------


def _solve(
    program: Program,
    occurrences: Sequence[_Occurrence],
    masks: _BusyMasks,
    time_limit: float,
    workers: int,
) -> tuple[dict[_Occurrence, tuple[int, str | None]], str]:
    model = cp_model.CpModel()
    placed: dict[int, cp_model.IntVar] = {}
    start: dict[int, cp_model.IntVar] = {}
    day: dict[int, cp_model.IntVar] = {}
    busy: dict[int, cp_model.IntervalVar] = {}
    room_of: dict[int, dict[str, cp_model.IntVar]] = {}
    objective: list[cp_model.LinearExprT] = []
    weights = program.weights
    first_weekday = date(program.year, 1, 1).weekday()
    for n, occ in enumerate(occurrences):
        activity = occ.activity
        minutes = activity.duration_minutes
        # The start takes only the values worked out for it; placing is
        # optional, and worth more than any wish.
        placed[n] = model.new_bool_var(f"placed[{occ.label}]")
        start[n] = model.new_int_var_from_domain(
            cp_model.Domain.from_values(occ.starts), f"start[{occ.label}]"
        )
        first_day, last_day = occ.starts[0] // DAY, occ.starts[-1] // DAY
        day[n] = model.new_int_var(first_day, last_day, f"day[{occ.label}]")
        model.add_division_equality(day[n], start[n], DAY)
        busy[n] = model.new_optional_fixed_size_interval_var(
            start[n], minutes, placed[n], f"busy[{occ.label}]"
        )
        objective.append(weights.placed * placed[n])
        if activity.needs_room:
            room_of[n] = {r: model.new_bool_var(f"room[{occ.label},{r}]") for r in occ.rooms}
            model.add(sum(room_of[n].values()) == placed[n])

        # Wishes, each a literal that can hold only when the event is placed.
        wish = activity.preference
        if wish.part_of_day is not None:
            met = model.new_bool_var(f"part_of_day[{occ.label}]")
            model.add_implication(met, placed[n])
            time_of_day = start[n] - DAY * day[n]
            if wish.part_of_day == "morning":
                model.add(time_of_day < 12 * 60).only_enforce_if(met)
            else:
                model.add(time_of_day >= 12 * 60).only_enforce_if(met)
            objective.append(weights.preferred_time * met)
        if wish.weekdays:
            met = model.new_bool_var(f"weekday[{occ.label}]")
            model.add_implication(met, placed[n])
            weekday = model.new_int_var(0, 6, f"weekday[{occ.label}]")
            model.add_modulo_equality(weekday, day[n] + first_weekday, 7)
            model.add_linear_expression_in_domain(
                weekday, cp_model.Domain.from_values(wish.weekdays)
            ).only_enforce_if(met)
            objective.append(weights.preferred_time * met)
        if wish.earlier:
            weeks = model.new_int_var(0, (last_day - first_day) // 7, f"weeks[{occ.label}]")
            model.add_division_equality(weeks, day[n] - first_day, 7)
            objective.append(-weights.earlier * weeks)
        # Optional attendees: how many are free at each start, counted
        # before the model; the model earns it in tiers, "at least k free",
        # each tier a set of starts (exact at each tier's k).
        if activity.optional:
            counts = masks.free_counts(activity.optional, occ.starts, minutes)
            levels = _tiers(sorted(set(counts)))
            objective.append(weights.optional_attendee * levels[0] * placed[n])
            for low, high in itertools.pairwise(levels):
                tier = model.new_bool_var(f"optional[{occ.label},{high}]")
                model.add_implication(tier, placed[n])
                good = [s for s, c in zip(occ.starts, counts, strict=True) if c >= high]
                model.add_linear_expression_in_domain(
                    start[n], cp_model.Domain.from_values(good)
                ).only_enforce_if(tier)
                objective.append(weights.optional_attendee * (high - low) * tier)

    # Required attendees: never two events at once, at most so many a day.
    by_person: dict[str, list[int]] = defaultdict(list)
    for n, occ in enumerate(occurrences):
        for person in occ.activity.required:
            by_person[person].append(n)
    for own in by_person.values():
        if len(own) < 2:
            continue
        model.add_no_overlap([busy[n] for n in own])
        if len(own) > program.max_events_per_person_per_day:
            days = [
                model.new_optional_fixed_size_interval_var(day[n], 1, placed[n], "") for n in own
            ]
            model.add_cumulative(days, [1] * len(days), program.max_events_per_person_per_day)

    # Rooms: never double-booked (capacity is in each event's list of rooms).
    by_room: dict[str, list[cp_model.IntervalVar]] = defaultdict(list)
    for n, rooms in room_of.items():
        minutes = occurrences[n].activity.duration_minutes
        for room, chosen in rooms.items():
            by_room[room].append(
                model.new_optional_fixed_size_interval_var(start[n], minutes, chosen, "")
            )
    for intervals in by_room.values():
        if len(intervals) > 1:
            model.add_no_overlap(intervals)

    # One activity's occurrences: in order, `min_gap_days` apart; spread
    # evenly through a window they share.
    by_activity: dict[str, list[int]] = defaultdict(list)
    for n, occ in enumerate(occurrences):
        by_activity[occ.activity.id].append(n)
    for own in by_activity.values():
        activity = occurrences[own[0]].activity
        gap = max(activity.min_gap_days * DAY, activity.duration_minutes)
        for i, a in enumerate(own):
            for b in own[i + 1 :]:
                model.add(start[b] >= start[a] + gap).only_enforce_if([placed[a], placed[b]])
        shared = [n for n in own if occurrences[n].days == occurrences[own[0]].days]
        # Alike occurrences are placed first to last: the order is only a
        # name, and one left out must not be stranded before its followers.
        for a, b in itertools.pairwise(shared):
            model.add_implication(placed[b], placed[a])
        if len(shared) > 1 and weights.spread:
            low = min(occurrences[n].starts[0] for n in shared) // DAY
            high = max(occurrences[n].starts[-1] for n in shared) // DAY
            for k, n in enumerate(shared):
                ideal = low + (2 * k + 1) * (high - low) // (2 * len(shared))
                off = model.new_int_var(0, high - low, "")
                model.add_abs_equality(off, day[n] - ideal)
                weeks = model.new_int_var(0, (high - low) // 7 + 1, "")
                model.add_division_equality(weeks, off, 7)
                objective.append(-weights.spread * weeks)

    model.maximize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    # Probing spent 6 s a pass on a county-sized year (300 events) before
    # the search could start; the model needs none of what it finds.
    solver.parameters.cp_model_probing_level = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {}, solver.status_name(status)
    placements: dict[_Occurrence, tuple[int, str | None]] = {}
    for n, occ in enumerate(occurrences):
        if solver.value(placed[n]):
            taken = [r for r, v in room_of.get(n, {}).items() if solver.value(v)]
            placements[occ] = (solver.value(start[n]), taken[0] if taken else None)
    return placements, solver.status_name(status)


def _tiers(values: list[int], most: int = OPTIONAL_TIERS) -> list[int]:
    """At most `most` thresholds from the distinct free counts, lowest and
    highest kept."""
    if len(values) <= most:
        return values
    step = (len(values) - 1) / (most - 1)
    return sorted({values[round(k * step)] for k in range(most)})


# --- why an occurrence stayed out --------------------------------------------


def _why_left_out(
    program: Program,
    occ: _Occurrence,
    chosen: dict[_Occurrence, tuple[int, str | None]],
    proven: bool,
) -> Unplaced:
    """Which placed events stand in the way at each of the occurrence's
    free times, and by which rule: the most frequent, in words."""
    activity = occ.activity
    minutes = activity.duration_minutes
    # (the other event, the rule it breaks, what the rule names): counted.
    blockers: Counter[tuple[str, str, str]] = Counter()
    for begin in occ.starts:
        end = begin + minutes
        for other, (at, room) in chosen.items():
            other_end = at + other.activity.duration_minutes
            shared = set(activity.required) & set(other.activity.required)
            if other.activity.id == activity.id:
                gap = max(activity.min_gap_days * DAY, minutes)
                if abs(at - begin) < gap:
                    blockers[(other.label, why.APART, str(activity.min_gap_days))] += 1
            elif shared and at < end and begin < other_end:
                blockers[(other.label, why.DOUBLE_BOOKED, ", ".join(sorted(shared)))] += 1
            elif room is not None and room in occ.rooms and at < end and begin < other_end:
                blockers[(other.label, why.ROOM_TAKEN, room)] += 1
    if not blockers:
        return Unplaced(
            activity.id,
            occ.number,
            "NOT_PLACED_IN_TIME",
            why.not_in_time(occ.label, program.max_events_per_person_per_day),
        )
    top = blockers.most_common(3)
    rule = "SPREAD" if top[0][0][1] == why.APART else "DOUBLE_BOOKED"
    words = why.clashes(occ.label, occ.days, [key for key, _ in top], proven)
    return Unplaced(activity.id, occ.number, rule, words)


def _hours_words(program: Program) -> str:
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in program.office_hours.blocks)
