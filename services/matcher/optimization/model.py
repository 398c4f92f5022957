"""The CP-SAT model of FORMAT.md: one boolean per candidate session (case,
counselor, start), the constraints grouped by the hard rule they encode and
the objective term by term. Both ways of solving use it: the whole instance
at once (`solver`) and a few dozen cases at a time against the rest held
fixed (`lns`).
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from math import floor

from ortools.sat.python import cp_model

from services.matcher.optimization.booked import booked_weeks
from services.matcher.optimization.instance import (
    Case,
    CaseKind,
    Counselor,
    Instance,
    Schedule,
    Session,
)
from services.rules.office_time import iso_week

STARTS_PER_DAY = 3  # free starts kept per case, counselor and day, where not all are
SCALE = 8640  # objective units per score point: whole numbers for a wait per minute


# Compared and hashed by identity: the model keys dicts by candidate, and
# hashing the case and counselor inside (availability and all) cost seconds.
@dataclass(frozen=True, eq=False)
class Candidate:
    case: Case
    counselor: Counselor
    start: datetime
    modality: str

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.case.minutes)

    def session(self) -> Session:
        return Session(
            self.case.id, self.counselor.id, self.start, self.case.minutes, self.modality
        )


class Costs:
    """Session costs in whole NT$, as the quota charges them (rules.cost),
    kept by provider id and length, since hashing Fraction rates costs more
    than the arithmetic."""

    def __init__(self, inst: Instance) -> None:
        self._inst = inst
        self._known: dict[tuple[str, int], int] = {}

    def ntd(self, counselor: Counselor, minutes: int) -> int:
        key = (counselor.provider, minutes)
        cost = self._known.get(key)
        if cost is None:
            cost = self._known[key] = self._inst.session_cost(counselor, minutes)
        return cost


class Load:
    """What a set of sessions takes of every limit of the rules. Sessions
    come and go one at a time, so that a search can free a few cases, plan
    them against what the others hold, and put the result back. Times are
    minutes from the horizon's start."""

    def __init__(self, inst: Instance, costs: Costs, sessions: Iterable[Session] = ()) -> None:
        self._inst, self._costs = inst, costs
        self.sessions_of_case: dict[str, list[Session]] = defaultdict(list)
        # (counselor, day) -> (begin, end) of each session
        self.busy: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        self.counselor_cases: dict[str, Counter[str]] = defaultdict(Counter)
        self.weekly: Counter[tuple[str, tuple[int, int]]] = Counter()
        self.employee_minutes: Counter[str] = Counter()
        self.provider_minutes: Counter[str] = Counter()
        self.agency_ntd: Counter[str] = Counter()
        for session in sessions:
            self.add(session)

    def add(self, session: Session) -> None:
        self._count(session, +1)
        self.sessions_of_case[session.case].append(session)
        begin = self._inst.minute_of(session.start)
        self.busy[(session.counselor, begin // 1440)].append((begin, begin + session.minutes))

    def remove(self, session: Session) -> None:
        self._count(session, -1)
        self.sessions_of_case[session.case].remove(session)
        begin = self._inst.minute_of(session.start)
        self.busy[(session.counselor, begin // 1440)].remove((begin, begin + session.minutes))

    def _count(self, session: Session, sign: int) -> None:
        case = self._inst.case_by_id[session.case]
        counselor = self._inst.counselor_by_id[session.counselor]
        self.counselor_cases[counselor.id][case.id] += sign
        self.weekly[(case.employee, iso_week(session.start))] += sign
        self.employee_minutes[case.employee] += sign * session.minutes
        self.provider_minutes[counselor.provider] += sign * session.minutes
        self.agency_ntd[case.agency] += sign * self._costs.ntd(counselor, session.minutes)

    def sessions(self) -> list[Session]:
        return [s for own in self.sessions_of_case.values() for s in own]

    def holds(self, case_id: str) -> bool:
        return bool(self.sessions_of_case.get(case_id))

    def cases_of(self, counselor_id: str) -> set[str]:
        return {case for case, n in self.counselor_cases[counselor_id].items() if n}

    def sessions_on(self, counselor_id: str, day: int) -> int:
        return len(self.busy.get((counselor_id, day), ()))

    def minutes_inside(self, counselor_id: str, start: int, end: int) -> int:
        """Minutes of the counselor's sessions inside [start, end), which
        lies within one day (availability intervals do)."""
        busy = self.busy.get((counselor_id, start // 1440), ())
        return sum(e - b for b, e in busy if start <= b and e <= end)


class CandidatePool:
    """Every case's possible sessions (rules 1 and 2), by counselor and day,
    worked out once per case and filtered against a `Load` each time the
    case is planned: per counselor and day the earliest few starts that are
    still free (waiting costs, and other cases may want the later ones),
    or every start (`starts_per_day=None`), which loses nothing. A booked
    session's own place (re-planning) is always among them, free: keeping
    it must stay possible."""

    def __init__(self, inst: Instance, starts_per_day: int | None = STARTS_PER_DAY) -> None:
        self._inst = inst
        self._per_day = starts_per_day
        self._groups: dict[str, list[tuple[Counselor, str, int, list[int]]]] = {}
        self._booked: dict[tuple[str, str, int], set[int]] = defaultdict(set)
        for b in inst.booked:
            minute = inst.minute_of(b.start)
            self._booked[(b.case, b.counselor, minute // 1440)].add(minute)

    def booked(self, cand: Candidate) -> bool:
        """Whether the candidate is a booked session's own place."""
        minute = self._inst.minute_of(cand.start)
        return minute in self._booked.get((cand.case.id, cand.counselor.id, minute // 1440), ())

    def _of(self, case: Case) -> list[tuple[Counselor, str, int, list[int]]]:
        groups = self._groups.get(case.id)
        if groups is None:
            groups = []
            for counselor in self._inst.qualified(case):
                modality = next(m for m in case.modalities if m in counselor.modalities)
                by_day: dict[int, list[int]] = defaultdict(list)
                for start in self._inst.start_minutes(case, counselor):
                    by_day[start // 1440].append(start)
                groups.extend((counselor, modality, day, own) for day, own in by_day.items())
            self._groups[case.id] = groups
        return groups

    def free(self, case: Case, load: Load) -> list[Candidate]:
        """The case's candidates that no session in `load` rules out: the
        counselor free then and under their daily limit, the employee's
        week not taken by another case."""
        found = []
        length = case.minutes
        origin = self._inst.horizon.start
        week_limit = self._inst.rules.max_sessions_per_week
        # The horizon starts on a Monday: its weeks are ISO weeks.
        weeks_taken = {
            week
            for week in range(self._inst.horizon.weeks)
            if load.weekly[(case.employee, iso_week(origin + timedelta(weeks=week)))] >= week_limit
        }
        for counselor, modality, day, starts in self._of(case):
            if day // 7 in weeks_taken:
                continue
            busy = load.busy.get((counselor.id, day), ())
            if len(busy) >= counselor.max_sessions_per_day:
                continue
            placed = self._booked.get((case.id, counselor.id, day), ())
            kept = 0
            for start in starts:
                if self._per_day is not None and kept >= self._per_day and start not in placed:
                    if not placed:
                        break
                    continue
                end = start + length
                if any(b < end and start < e for b, e in busy):
                    continue
                moment = origin + timedelta(minutes=start)
                found.append(Candidate(case, counselor, moment, modality))
                kept += 1
        return found


def spread(
    case: Case,
    found: list[Candidate],
    limit: int,
    rng: random.Random,
    keep: Callable[[Candidate], bool] = lambda cand: False,
) -> list[Candidate]:
    """At most `limit` of a case's candidates: all with its preferred
    counselor and all that `keep` names (a booked session's place), the
    earliest few (for the wait), and the rest drawn evenly from each ISO
    week, since a case wanting several sessions needs one in each of
    several weeks."""
    if len(found) <= limit:
        return found

    def first(cand: Candidate) -> bool:
        return cand.counselor.id == case.preferred_counselor or keep(cand)

    preferred = [c for c in found if first(c)]
    earliest = sorted((c for c in found if not first(c)), key=lambda c: c.start)
    kept = preferred + earliest[: max(limit // 10, 1)]
    rest = earliest[max(limit // 10, 1) :]
    by_week: dict[tuple[int, int], list[Candidate]] = defaultdict(list)
    for cand in rest:
        by_week[iso_week(cand.start)].append(cand)
    room = max(limit - len(kept), 0)
    weeks = sorted(by_week)
    for at, week in enumerate(weeks):
        share = room // (len(weeks) - at)
        taken = rng.sample(by_week[week], min(share, len(by_week[week])))
        kept.extend(taken)
        room -= len(taken)
    return kept


@dataclass
class Model:
    model: cp_model.CpModel
    chosen: dict[Candidate, cp_model.IntVar] = field(default_factory=dict)
    # The objective's helpers, kept to hint them too: a partial hint leaves
    # CP-SAT to complete it, which it often fails to do in time.
    first: dict[tuple[str, datetime], cp_model.IntVar] = field(default_factory=dict)
    # by case and counselor: whether the counselor is the case's anchor, and
    # how many of the case's sessions the counselor then holds
    anchor: dict[tuple[str, str], cp_model.IntVar] = field(default_factory=dict)
    with_anchor: dict[tuple[str, str], cp_model.IntVar] = field(default_factory=dict)
    # The objective as a weighted sum plus a constant, to value a hint.
    objective_vars: list[cp_model.IntVar] = field(default_factory=list)
    objective_coefficients: list[int] = field(default_factory=list)
    objective_constant: int = 0

    def value_of(self, hint: dict[int, int]) -> int:
        """The objective (in SCALE units) of the hinted assignment."""
        pairs = zip(self.objective_vars, self.objective_coefficients, strict=True)
        return self.objective_constant + sum(c * hint.get(v.index, 0) for v, c in pairs)


def _weighted(terms: Sequence[tuple[cp_model.IntVar, int]]) -> cp_model.LinearExpr:
    return cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms])


def _scaled(value: Fraction) -> int:
    return round(value * SCALE)


def _add_energy_cuts(
    inst: Instance,
    model: cp_model.CpModel,
    counselor: Counselor,
    own: Sequence[Candidate],
    x: dict[Candidate, cp_model.IntVar],
    held: Load,
) -> None:
    """Implied by rule 3, stated for the linear relaxation, which no-overlap
    alone leaves blind: the sessions inside one availability interval of a
    counselor last no longer than the interval. This is what lets CP-SAT
    prove small instances optimal."""
    windows = sorted(counselor.availability, key=lambda iv: iv.start)
    starts = [iv.start for iv in windows]
    inside: dict[int, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    for cand in own:
        at = bisect.bisect_right(starts, cand.start) - 1
        if at >= 0 and windows[at].holds(cand.start, cand.end):
            inside[at].append((x[cand], cand.case.minutes))
    for at, terms in inside.items():
        window = windows[at]
        room = int((window.end - window.start).total_seconds() // 60)
        room -= held.minutes_inside(
            counselor.id, inst.minute_of(window.start), inst.minute_of(window.end)
        )
        if sum(minutes for _, minutes in terms) > room:
            model.add(_weighted(terms) <= room)


def build_model(inst: Instance, cands: Sequence[Candidate], held: Load) -> Model:
    """The model over `cands`, which must not clash with a session of
    `held` (`CandidatePool.free` sees to it); the sessions `held` keeps
    take their share of every other limit."""
    m = Model(cp_model.CpModel())
    model = m.model
    for cand in cands:
        m.chosen[cand] = model.new_bool_var(f"x[{cand.case.id},{cand.counselor.id},{cand.start}]")
    by_case: dict[str, list[Candidate]] = defaultdict(list)
    by_counselor: dict[str, list[Candidate]] = defaultdict(list)
    for cand in cands:
        by_case[cand.case.id].append(cand)
        by_counselor[cand.counselor.id].append(cand)
    x = m.chosen
    costs = Costs(inst)

    # Rule 3: a counselor's sessions never overlap; at most max_sessions_per_day a day.
    for counselor_id, own in by_counselor.items():
        origin = inst.horizon.start
        intervals = []
        per_day: dict[int, list[cp_model.IntVar]] = defaultdict(list)
        for cand in own:
            begin = int((cand.start - origin).total_seconds() // 60)
            intervals.append(
                model.new_optional_fixed_size_interval_var(
                    begin, cand.case.minutes, x[cand], f"busy[{counselor_id},{cand.start}]"
                )
            )
            per_day[begin // 1440].append(x[cand])
        model.add_no_overlap(intervals)
        counselor = inst.counselor_by_id[counselor_id]
        _add_energy_cuts(inst, model, counselor, own, x, held)
        for day, day_vars in per_day.items():
            room = counselor.max_sessions_per_day - held.sessions_on(counselor_id, day)
            if len(day_vars) > room:
                model.add(cp_model.LinearExpr.sum(day_vars) <= room)

    # Rule 4: a case gets at most its sessions; an employee at most
    # max_sessions_per_week a week and their remaining hours in all.
    weekly: dict[tuple[str, tuple[int, int]], list[cp_model.IntVar]] = defaultdict(list)
    employee_minutes: dict[str, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    entitlement: dict[str, Fraction] = {}
    for case_id, own in by_case.items():
        case = inst.case_by_id[case_id]
        model.add(cp_model.LinearExpr.sum([x[c] for c in own]) <= case.sessions)
        for cand in own:
            weekly[(case.employee, iso_week(cand.start))].append(x[cand])
            employee_minutes[case.employee].append((x[cand], case.minutes))
        entitlement[case.employee] = case.employee_remaining_hours
    for key, week_vars in weekly.items():
        room = inst.rules.max_sessions_per_week - held.weekly[key]
        if len(week_vars) > room:
            model.add(cp_model.LinearExpr.sum(week_vars) <= room)
    for employee, terms in employee_minutes.items():
        room_minutes = int(entitlement[employee] * 60) - held.employee_minutes[employee]
        model.add(_weighted(terms) <= room_minutes)

    # Rule 5: a provider's counselors hold at most its hours cap.
    provider_minutes: dict[str, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    for cand in cands:
        provider_minutes[cand.counselor.provider].append((x[cand], cand.case.minutes))
    for provider_id, terms in provider_minutes.items():
        cap = inst.provider_by_id[provider_id].hours_cap
        room_minutes = int(cap * 60) - held.provider_minutes[provider_id]
        model.add(_weighted(terms) <= room_minutes)

    # Rule 6: an agency's cases cost at most its budget, each session at what
    # the quota will charge for it (whole NT$, rules.cost).
    agency_cost: dict[str, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    for cand in cands:
        agency_cost[cand.case.agency].append(
            (x[cand], costs.ntd(cand.counselor, cand.case.minutes))
        )
    for agency_id, terms in agency_cost.items():
        budget = inst.agency_by_id[agency_id].budget_ntd
        room_cost = floor(budget) - held.agency_ntd[agency_id]
        model.add(_weighted(terms) <= room_cost)

    # Rule 7: a crisis case with sessions has its first one inside the deadline.
    deadline = timedelta(hours=float(inst.rules.crisis_deadline_hours))
    for case_id, own in by_case.items():
        case = inst.case_by_id[case_id]
        if case.kind is not CaseKind.CRISIS:
            continue
        early = [x[c] for c in own if c.start <= inst.reference_time(case) + deadline]
        for cand in own:
            model.add_bool_or(early).only_enforce_if(x[cand])

    # Rule 8 (ours, for re-planning; booked.py): a case keeps a session in
    # each ISO week where it has a booked one. A case not in the model is
    # held, and keeps what it holds.
    for case_id, weeks in booked_weeks(inst).items():
        for week in weeks if case_id in by_case else ():
            in_week = [x[c] for c in by_case[case_id] if iso_week(c.start) == week]
            model.add(cp_model.LinearExpr.sum(in_week) >= 1)

    _set_objective(inst, m, by_case, held)
    return m


def _set_objective(
    inst: Instance, m: Model, by_case: dict[str, list[Candidate]], held: Load
) -> None:
    """FORMAT.md's objective, term by term, in SCALE units."""
    model, x = m.model, m.chosen
    weights = inst.weights
    # Terms as (variable, coefficient) pairs plus a constant: one weighted
    # sum, far cheaper to build than an expression of thousands of terms.
    objective_vars = m.objective_vars
    objective_coefficients = m.objective_coefficients
    constant = 0
    # A session's value depends only on the case's kind and length and the
    # provider's rate: computed once per combination, in exact fractions.
    value: dict[tuple[bool, int, str], int] = {}
    for own in by_case.values():
        for cand in own:
            crisis = cand.case.kind is CaseKind.CRISIS
            kind = (crisis, cand.case.minutes, cand.counselor.provider)
            if kind not in value:
                per_session = weights.crisis_session if crisis else weights.session
                cost = inst.session_cost(cand.counselor, cand.case.minutes)
                value[kind] = _scaled(per_session - weights.cost_per_kntd * cost / 1000)
            objective_vars.append(x[cand])
            objective_coefficients.append(value[kind])
    per_continuity = _scaled(weights.continuity)
    per_minute_waited = _scaled(weights.wait_day / 1440)  # exact: SCALE is 6 x 1440
    for case_id, own in by_case.items():
        case = inst.case_by_id[case_id]
        # Continuity: sessions with the anchor counselor, who is the preferred
        # one if set, else whichever holds most of the case's sessions.
        if case.preferred_counselor is not None or case.sessions == 1:
            # The anchor is known (a single session is with its anchor).
            for cand in own:
                if case.preferred_counselor in (None, cand.counselor.id):
                    objective_vars.append(x[cand])
                    objective_coefficients.append(per_continuity)
        else:
            # An anchor chosen per case: the maximum falls out of the optimum.
            by_counselor: dict[str, list[cp_model.IntVar]] = defaultdict(list)
            for cand in own:
                by_counselor[cand.counselor.id].append(x[cand])
            chosen = []
            for counselor_id, held_vars in sorted(by_counselor.items()):
                anchor = model.new_bool_var(f"anchor[{case_id},{counselor_id}]")
                with_anchor = model.new_int_var(
                    0, case.sessions, f"continuity[{case_id},{counselor_id}]"
                )
                model.add(with_anchor <= cp_model.LinearExpr.sum(held_vars))
                model.add(with_anchor <= case.sessions * anchor)
                m.anchor[(case_id, counselor_id)] = anchor
                m.with_anchor[(case_id, counselor_id)] = with_anchor
                chosen.append(anchor)
                objective_vars.append(with_anchor)
                objective_coefficients.append(per_continuity)
            model.add_at_most_one(chosen)
        # Waiting: from the reference time to the first session, or to the
        # horizon's end without one. `first` marks the start that counts;
        # candidates with the same start share it.
        reference = inst.reference_time(case)
        unserved_wait = max(inst.horizon.end - reference, timedelta())
        wait_minutes = int(unserved_wait.total_seconds() // 60)
        constant -= per_minute_waited * wait_minutes
        at: dict[datetime, list[cp_model.IntVar]] = defaultdict(list)
        for cand in own:
            at[cand.start].append(x[cand])
        firsts = []
        for start, held_vars in sorted(at.items()):
            first = m.first[(case_id, start)] = model.new_bool_var(f"first[{case_id},{start}]")
            model.add_bool_or(held_vars).only_enforce_if(first)
            firsts.append(first)
            waited = max(int((start - reference).total_seconds() // 60), 0)
            objective_vars.append(first)
            objective_coefficients.append(per_minute_waited * (wait_minutes - waited))
        model.add_at_most_one(firsts)
    # Moving a booked session costs weights.move: the move is paid unless the
    # session at its own place is chosen (the week has one session at most).
    per_move = _scaled(weights.move)
    if per_move:
        places = {
            (c.case.id, c.counselor.id, c.start): x[c] for own in by_case.values() for c in own
        }
        for b in inst.booked:
            if b.case in by_case:
                constant -= per_move
                kept = places.get((b.case, b.counselor, b.start))
                if kept is not None:
                    objective_vars.append(kept)
                    objective_coefficients.append(per_move)
    # Cases no counselor can take wait the whole horizon: a constant, kept so
    # that the objective and its bound read as the score FORMAT.md defines.
    for case in inst.cases:
        if case.id not in by_case and not held.holds(case.id):
            idle = max(inst.horizon.end - inst.reference_time(case), timedelta())
            constant -= per_minute_waited * int(idle.total_seconds() // 60)
    objective = cp_model.LinearExpr.weighted_sum(objective_vars, objective_coefficients)
    model.maximize(objective + constant)
    m.objective_constant = constant


def with_sessions(
    inst: Instance, cands: list[Candidate], sessions: Iterable[Session]
) -> list[Candidate]:
    """`cands` plus a candidate for each of `sessions` they lack, so that
    those sessions can be hinted in full."""
    have = {(c.case.id, c.counselor.id, c.start) for c in cands}
    extra = [
        Candidate(inst.case_by_id[s.case], inst.counselor_by_id[s.counselor], s.start, s.modality)
        for s in sessions
        if (s.case, s.counselor, s.start) not in have
    ]
    return cands + extra


def hint(inst: Instance, built: Model, sessions: Sequence[Session]) -> dict[int, int]:
    """Gives CP-SAT `sessions` (of the model's cases) as a complete starting
    solution; returns the hinted value of each variable, by index."""
    booked = {(s.case, s.counselor, s.start) for s in sessions}
    earliest: dict[str, datetime] = {}
    held: dict[str, Counter[str]] = defaultdict(Counter)
    for s in sessions:
        earliest[s.case] = min(earliest.get(s.case, s.start), s.start)
        held[s.case][s.counselor] += 1
    anchors = {}
    for case_id, counts in held.items():
        anchors[case_id] = max(sorted(counts), key=lambda k: counts[k])
    values: dict[int, int] = {}

    def give(var: cp_model.IntVar, value: int) -> None:
        built.model.add_hint(var, value)
        values[var.index] = value

    for cand, var in built.chosen.items():
        give(var, int((cand.case.id, cand.counselor.id, cand.start) in booked))
    for (case_id, start), var in built.first.items():
        give(var, int(earliest.get(case_id) == start))
    for (case_id, counselor_id), var in built.anchor.items():
        anchored = anchors.get(case_id) == counselor_id
        give(var, int(anchored))
        give(built.with_anchor[(case_id, counselor_id)], held[case_id][counselor_id] * anchored)
    return values


def chosen_sessions(built: Model, solver: cp_model.CpSolver) -> list[Session]:
    return [cand.session() for cand, var in built.chosen.items() if solver.value(var)]


def schedule_of(inst: Instance, sessions: Iterable[Session]) -> Schedule:
    ordered = tuple(sorted(sessions, key=lambda s: (s.start, s.counselor, s.case)))
    return Schedule(inst.name, ordered)


def cp_solver(seconds: float, workers: int, prove: bool = False) -> cp_model.CpSolver:
    """A CP-SAT solver; `prove` asks for the strongest linear relaxation in
    one of the workers, which is what closes the gap on whole models (on
    two cores the default portfolio leaves the bound where presolve put it)."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = workers
    if prove and workers == 2:
        solver.parameters.subsolvers.extend(["max_lp", "default_lp"])
    elif prove:
        solver.parameters.linearization_level = 2
    return solver
