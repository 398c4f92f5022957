"""Optimized matching of cases to counselor slots with OR-Tools CP-SAT.

    python -m services.matcher.solver INSTANCE.json [--time-limit S] [-o SCHEDULE.json]

The model is built in one place (`build_model`), one boolean per candidate
session (case, counselor, start), with the constraints grouped by the hard
rule of FORMAT.md they encode and the objective term by term. Candidates
are pruned before the model is built: per case, counselor and day only the
earliest few starts are kept (waiting costs, so later starts on the same day
rarely win), plus every session of the first-come-first-served schedule,
which is also given to CP-SAT as its hint. The schedule returned is the
better, by our verifier's exact score, of the solver's and the baseline's:
never worse than first-come-first-served.

Small instances are one model, solved with a worker on CP-SAT's strongest
linear relaxation (plus energy cuts per availability window): that is
what proves them optimal or within a fraction of a percent. Larger ones
go by large-neighbourhood search from the baseline: many rounds of a few
dozen cases re-planned against the rest held fixed, each round a small
model of the same kind.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from fractions import Fraction

from ortools.sat.python import cp_model

from services.matcher import greedy, reasons
from services.matcher.instance import (
    Case,
    CaseKind,
    Counselor,
    FormatError,
    Instance,
    Schedule,
    Session,
    dump_schedule,
    load_instance,
)
from services.matcher.verify import score_upper_bound, verify, violations_and_score

STARTS_PER_DAY = 3  # earliest candidate starts kept per case, counselor and day
# Up to this many cases, one model of the whole instance; beyond, neighbourhoods.
WHOLE_MODEL_CASES = 150
NEIGHBOURHOOD_CASES = 25  # cases re-planned together
NEIGHBOURHOOD_SECONDS = 0.6
NEIGHBOURHOOD_CANDIDATES = 150  # per case: large instances offer hundreds
EXPLAIN_SECONDS_PER_CASE = 0.0006
TWO_STARTS_UP_TO = 1000  # cases; beyond, one greedy start (seconds each on L)
CHECK_EVERY_SECONDS = 5.0  # how often the search verifies its schedule
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


@dataclass
class Model:
    model: cp_model.CpModel
    chosen: dict[Candidate, cp_model.IntVar] = field(default_factory=dict)
    # The objective's helpers, kept to hint them too: a partial hint leaves
    # CP-SAT to complete it, which it often fails to do in time.
    first: dict[Candidate, cp_model.IntVar] = field(default_factory=dict)
    with_anchor: dict[Candidate, cp_model.IntVar] = field(default_factory=dict)
    anchor: dict[tuple[str, str], cp_model.IntVar] = field(default_factory=dict)
    # The objective as a weighted sum plus a constant, to value a hint.
    objective_vars: list[cp_model.IntVar] = field(default_factory=list)
    objective_coefficients: list[int] = field(default_factory=list)
    objective_constant: int = 0

    def value_of(self, hint: dict[int, bool]) -> int:
        """The objective (in SCALE units) of the hinted assignment."""
        pairs = zip(self.objective_vars, self.objective_coefficients, strict=True)
        return self.objective_constant + sum(c for v, c in pairs if hint.get(v.index))


def _modality(case: Case, counselor: Counselor) -> str:
    return next(m for m in case.modalities if m in counselor.modalities)


class CandidatePool:
    """Every case's candidate sessions, worked out once and reused by each
    neighbourhood: at most `per_case` of each case (its preferred
    counselor's, then the earliest: waiting costs, and an early start leaves
    later weeks for more sessions)."""

    def __init__(self, inst: Instance, per_case: int | None = None) -> None:
        self._inst = inst
        self._per_case = per_case
        self._cached: dict[str, list[Candidate]] = {}

    def of(self, case: Case) -> list[Candidate]:
        own = self._cached.get(case.id)
        if own is None:
            own = self._cached[case.id] = self._build(case)
        return own

    def _build(self, case: Case) -> list[Candidate]:
        own: list[Candidate] = []
        for counselor in self._inst.qualified(case):
            per_day: dict[date, int] = defaultdict(int)
            modality = _modality(case, counselor)
            for start in self._inst.starts(case, counselor):
                if per_day[start.date()] < STARTS_PER_DAY:
                    per_day[start.date()] += 1
                    own.append(Candidate(case, counselor, start, modality))
        if self._per_case is not None and len(own) > self._per_case:
            preferred = [c for c in own if c.counselor.id == case.preferred_counselor]
            rest = sorted(
                (c for c in own if c.counselor.id != case.preferred_counselor),
                key=lambda c: (c.start, c.counselor.id),
            )
            own = preferred + rest[: max(self._per_case - len(preferred), 0)]
        return own


def candidates(
    inst: Instance, pool: CandidatePool, current: Schedule, free: set[str] | None = None
) -> list[Candidate]:
    """Candidate sessions of the `free` cases (all when None) from `pool`,
    plus the sessions `current` gives them, so that it is a complete hint."""
    chosen: dict[tuple[str, str, datetime], Candidate] = {}
    for case in inst.cases:
        if free is None or case.id in free:
            for cand in pool.of(case):
                chosen[(case.id, cand.counselor.id, cand.start)] = cand
    for session in current.sessions:
        if free is not None and session.case not in free:
            continue
        key = (session.case, session.counselor, session.start)
        if key not in chosen:
            chosen[key] = Candidate(
                inst.case_by_id[session.case],
                inst.counselor_by_id[session.counselor],
                session.start,
                session.modality,
            )
    return list(chosen.values())


class _Held:
    """What fixed sessions already take of each limit."""

    def __init__(self, inst: Instance, fixed: Sequence[Session], costs: _Costs) -> None:
        self.cases = {s.case for s in fixed}
        self.busy: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.sessions_of: dict[str, list[Session]] = defaultdict(list)
        self.per_day: dict[tuple[str, date], int] = defaultdict(int)
        self.weekly: dict[tuple[str, tuple[int, int]], int] = defaultdict(int)
        self.employee_minutes: dict[str, int] = defaultdict(int)
        self.provider_minutes: dict[str, int] = defaultdict(int)
        self.agency_sixtieths: dict[str, int] = defaultdict(int)
        for session in fixed:
            case = inst.case_by_id[session.case]
            counselor = inst.counselor_by_id[session.counselor]
            begin = int((session.start - inst.horizon.start).total_seconds() // 60)
            self.busy[counselor.id].append((begin, session.minutes))
            self.sessions_of[counselor.id].append(session)
            self.per_day[(counselor.id, session.start.date())] += 1
            self.weekly[(case.employee, _iso_week(session.start))] += 1
            self.employee_minutes[case.employee] += session.minutes
            self.provider_minutes[counselor.provider] += session.minutes
            self.agency_sixtieths[case.agency] += costs.sixtieths(counselor, session.minutes)

    def minutes_inside(self, counselor_id: str, start: datetime, end: datetime) -> int:
        """Minutes of the counselor's fixed sessions inside [start, end)."""
        return sum(
            s.minutes
            for s in self.sessions_of[counselor_id]
            if start <= s.start and s.start + timedelta(minutes=s.minutes) <= end
        )


class _Costs:
    """Session costs in NT$ x 60: whole for whole-NT$ rates; a fractional
    rate is rounded up, erring on the safe side of the budget. Kept by
    provider id and length, since hashing Fraction rates costs more than
    the arithmetic."""

    def __init__(self, inst: Instance) -> None:
        self._inst = inst
        self._known: dict[tuple[str, int], int] = {}

    def sixtieths(self, counselor: Counselor, minutes: int) -> int:
        key = (counselor.provider, minutes)
        cost = self._known.get(key)
        if cost is None:
            cost = self._known[key] = -int(-(self._inst.rate_of(counselor) * minutes) // 1)
        return cost


def _weighted(terms: Sequence[tuple[cp_model.IntVar, int]]) -> cp_model.LinearExpr:
    return cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [c for _, c in terms])


def _iso_week(moment: datetime) -> tuple[int, int]:
    year, week, _ = moment.isocalendar()
    return year, week


def _scaled(value: Fraction) -> int:
    return round(value * SCALE)


def _add_energy_cuts(
    model: cp_model.CpModel,
    counselor: Counselor,
    own: Sequence[Candidate],
    x: dict[Candidate, cp_model.IntVar],
    held: _Held,
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
        room -= held.minutes_inside(counselor.id, window.start, window.end)
        if sum(minutes for _, minutes in terms) > room:
            model.add(_weighted(terms) <= room)


def build_model(inst: Instance, cands: Sequence[Candidate], fixed: Sequence[Session] = ()) -> Model:
    """The model over `cands`; `fixed` sessions (of other cases) stay as they
    are and only take their share of every limit."""
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
    costs = _Costs(inst)
    held = _Held(inst, fixed, costs)

    # Rule 3: a counselor's sessions never overlap; at most max_sessions_per_day a day.
    for counselor_id, own in by_counselor.items():
        origin = inst.horizon.start
        intervals = []
        per_day: dict[date, list[cp_model.IntVar]] = defaultdict(list)
        for cand in own:
            begin = int((cand.start - origin).total_seconds() // 60)
            intervals.append(
                model.new_optional_fixed_size_interval_var(
                    begin, cand.case.minutes, x[cand], f"busy[{counselor_id},{cand.start}]"
                )
            )
            per_day[cand.start.date()].append(x[cand])
        for begin, size in held.busy[counselor_id]:
            intervals.append(model.new_fixed_size_interval_var(begin, size, "fixed"))
        model.add_no_overlap(intervals)
        _add_energy_cuts(model, inst.counselor_by_id[counselor_id], own, x, held)
        limit = inst.counselor_by_id[counselor_id].max_sessions_per_day
        for day, day_vars in per_day.items():
            room = limit - held.per_day[(counselor_id, day)]
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
            weekly[(case.employee, _iso_week(cand.start))].append(x[cand])
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

    # Rule 6: an agency's cases cost at most its budget (in NT$ x 60, whole numbers
    # for whole-NT$ rates; a fractional rate is rounded up, erring on the safe side).
    agency_cost: dict[str, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
    for cand in cands:
        sixtieths = costs.sixtieths(cand.counselor, cand.case.minutes)
        agency_cost[cand.case.agency].append((x[cand], sixtieths))
    for agency_id, terms in agency_cost.items():
        budget = inst.agency_by_id[agency_id].budget_ntd
        room_cost = int(budget * 60) - held.agency_sixtieths[agency_id]
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

    # Objective, term by term as FORMAT.md states it, in SCALE units.
    weights = inst.weights
    # Terms as (variable, coefficient) pairs plus a constant: one weighted
    # sum, far cheaper to build than an expression of thousands of terms.
    objective_vars = m.objective_vars
    objective_coefficients = m.objective_coefficients
    constant = 0
    # A session's value depends only on the case's kind and length and the
    # provider's rate: computed once per combination, in exact fractions.
    value: dict[tuple[bool, int, str], int] = {}
    for cand in cands:
        crisis = cand.case.kind is CaseKind.CRISIS
        kind = (crisis, cand.case.minutes, cand.counselor.provider)
        if kind not in value:
            per_session = weights.crisis_session if crisis else weights.session
            cost = inst.rate_of(cand.counselor) * cand.case.minutes / 60
            value[kind] = _scaled(per_session - weights.cost_per_kntd * cost / 1000)
        objective_vars.append(x[cand])
        objective_coefficients.append(value[kind])
    per_continuity = _scaled(weights.continuity)
    per_minute_waited = _scaled(weights.wait_day / 1440)  # exact: SCALE is 6 x 1440
    for case_id, own in by_case.items():
        case = inst.case_by_id[case_id]
        # Continuity: sessions with the anchor counselor, who is the preferred
        # one if set, else whichever holds most of the case's sessions: a
        # chosen anchor per case, so the maximum falls out of the optimum.
        counselors = sorted({c.counselor.id for c in own})
        if case.preferred_counselor is not None:
            anchors = {case.preferred_counselor: 1}
        else:
            anchor = {k: model.new_bool_var(f"anchor[{case_id},{k}]") for k in counselors}
            model.add_at_most_one(anchor.values())
            m.anchor.update(((case_id, k), var) for k, var in anchor.items())
            anchors = anchor  # type: ignore[assignment]
        for cand in own:
            if cand.counselor.id not in anchors:
                continue
            with_anchor = m.with_anchor[cand] = model.new_bool_var(
                f"continuity[{case_id},{cand.start}]"
            )
            model.add_implication(with_anchor, x[cand])
            flag = anchors[cand.counselor.id]
            if not isinstance(flag, int):
                model.add_implication(with_anchor, flag)
            objective_vars.append(with_anchor)
            objective_coefficients.append(per_continuity)
        # Waiting: from the reference time to the first session, or to the
        # horizon's end without one. `first` marks the session that counts.
        reference = inst.reference_time(case)
        unserved_wait = max(inst.horizon.end - reference, timedelta())
        wait_minutes = int(unserved_wait.total_seconds() // 60)
        constant -= per_minute_waited * wait_minutes
        firsts = []
        for cand in own:
            first = m.first[cand] = model.new_bool_var(f"first[{case_id},{cand.start}]")
            model.add_implication(first, x[cand])
            firsts.append(first)
            waited = max(int((cand.start - reference).total_seconds() // 60), 0)
            objective_vars.append(first)
            objective_coefficients.append(per_minute_waited * (wait_minutes - waited))
        model.add_at_most_one(firsts)
    # Cases no counselor can take wait the whole horizon: a constant, kept so
    # that the objective and its bound read as the score FORMAT.md defines.
    for case in inst.cases:
        if case.id not in by_case and case.id not in held.cases:
            idle = max(inst.horizon.end - inst.reference_time(case), timedelta())
            constant -= per_minute_waited * int(idle.total_seconds() // 60)
    objective = cp_model.LinearExpr.weighted_sum(objective_vars, objective_coefficients)
    model.maximize(objective + constant)
    m.objective_constant = constant
    return m


@dataclass(frozen=True)
class SolveReport:
    schedule: Schedule
    status: str
    objective: float
    bound: float | None  # proven: CP-SAT's, or `score_upper_bound` where tighter; None if neither
    seconds: float
    used: str  # "cp-sat", "cp-sat-lns" or "baseline"


@dataclass(frozen=True)
class Progress:
    """How a solve is going: the best score so far, the proven bound, and
    the seconds since it began."""

    best: float
    bound: float
    elapsed: float

    @property
    def gap(self) -> float:
        return max(self.bound - self.best, 0.0) / max(abs(self.best), 1.0)


ProgressSink = Callable[[Progress], None]


def solve(
    inst: Instance,
    time_limit: float = 30.0,
    workers: int = 2,
    seed: int = 1,
    on_progress: ProgressSink | None = None,
) -> SolveReport:
    """The best schedule found within `time_limit` seconds: one model of the
    whole instance when it is small, else large-neighbourhood search (free a
    few dozen cases, keep the rest, re-solve, keep what improves).
    `on_progress` hears of every better schedule."""
    began = time.monotonic()
    baseline, start_score = _best_start(inst)
    ceiling = float(score_upper_bound(inst))
    sink = on_progress or (lambda progress: None)
    sink(Progress(float(start_score), ceiling, time.monotonic() - began))
    if len(inst.cases) <= WHOLE_MODEL_CASES:
        report = _solve_whole(inst, baseline, began, time_limit, workers, ceiling, sink)
    else:
        # Leave time to explain the unserved at the end (about 0.6 ms a case).
        searching = time_limit - EXPLAIN_SECONDS_PER_CASE * len(inst.cases)
        report = _solve_by_neighbourhoods(
            inst, baseline, began, searching, workers, seed, ceiling, sink
        )
    # Why each case is left short, worked out once, for the schedule handed out.
    explained = replace(report.schedule, unserved=reasons.unserved(inst, report.schedule.sessions))
    return replace(report, schedule=explained, seconds=time.monotonic() - began)


def _best_start(inst: Instance) -> tuple[Schedule, Fraction]:
    """The first-come-first-served schedule to start from: with ties going
    to the counselor listed first (the baseline) and, where there is time
    for two, to the cheaper one; the better of them."""
    variants = [False, True] if len(inst.cases) <= TWO_STARTS_UP_TO else [False]
    scored = []
    for cheapest_first in variants:
        start = greedy.solve(inst, explain=False, cheapest_first=cheapest_first)
        scored.append((violations_and_score(inst, start)[1], cheapest_first, start))
    score, _, best = max(scored, key=lambda s: (s[0], not s[1]))
    return best, score


class _Reporter(cp_model.CpSolverSolutionCallback):
    """Passes each solution CP-SAT finds on as progress."""

    def __init__(self, began: float, ceiling: float, sink: ProgressSink) -> None:
        super().__init__()
        self._began, self._ceiling, self._sink = began, ceiling, sink

    def on_solution_callback(self) -> None:
        bound = min(self.best_objective_bound / SCALE, self._ceiling)
        self._sink(Progress(self.objective_value / SCALE, bound, time.monotonic() - self._began))


def _hint(inst: Instance, built: Model, baseline: Schedule) -> dict[int, bool]:
    """Gives CP-SAT the baseline as a complete starting solution; returns
    the hinted value of each variable, by index."""
    booked = {(s.case, s.counselor, s.start) for s in baseline.sessions}
    earliest: dict[str, datetime] = {}
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in baseline.sessions:
        earliest[s.case] = min(earliest.get(s.case, s.start), s.start)
        held[s.case][s.counselor] += 1
    anchors = {}
    for case in inst.cases:
        counts = held.get(case.id)
        if case.preferred_counselor is not None:
            anchors[case.id] = case.preferred_counselor
        elif counts:
            anchors[case.id] = max(sorted(counts), key=lambda k: counts[k])
    hint: dict[int, bool] = {}

    def give(var: cp_model.IntVar, value: bool) -> None:
        built.model.add_hint(var, value)
        hint[var.index] = value

    for cand, var in built.chosen.items():
        on = (cand.case.id, cand.counselor.id, cand.start) in booked
        give(var, on)
        if cand in built.first:
            give(built.first[cand], on and earliest[cand.case.id] == cand.start)
        if cand in built.with_anchor:
            give(built.with_anchor[cand], on and anchors.get(cand.case.id) == cand.counselor.id)
    for (case_id, counselor_id), var in built.anchor.items():
        give(var, anchors.get(case_id) == counselor_id)
    return hint


def _solve_whole(
    inst: Instance,
    baseline: Schedule,
    began: float,
    time_limit: float,
    workers: int,
    ceiling: float,
    sink: ProgressSink,
) -> SolveReport:
    built = build_model(inst, candidates(inst, CandidatePool(inst), baseline))
    _hint(inst, built, baseline)
    solver = _solver(max(time_limit - (time.monotonic() - began), 1.0), workers, prove=True)
    status = solver.solve(built.model, _Reporter(began, ceiling, sink))
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveReport(baseline, name, 0.0, None, time.monotonic() - began, "baseline")
    found = _schedule(inst, [], built, solver)
    ours, theirs = verify(inst, found), verify(inst, baseline)
    better = not ours.violations and ours.score >= theirs.score
    return SolveReport(
        found if better else baseline,
        name,
        solver.objective_value / SCALE,
        min(solver.best_objective_bound / SCALE, ceiling),
        time.monotonic() - began,
        "cp-sat" if better else "baseline",
    )


def _solve_by_neighbourhoods(
    inst: Instance,
    baseline: Schedule,
    began: float,
    time_limit: float,
    workers: int,
    seed: int,
    ceiling: float,
    sink: ProgressSink,
) -> SolveReport:
    rng = random.Random(seed)
    pool = CandidatePool(inst, NEIGHBOURHOOD_CANDIDATES)
    # The model keeps every rule, so a round that beats its hint is taken
    # on the model's word; the verifier, too slow to run every round on
    # large instances, checks the schedule every few seconds and at the end,
    # and a schedule it rejects is dropped for the last one it passed.
    current = verified = baseline
    score = violations_and_score(inst, baseline)[1]
    estimate = float(score)  # the model's word, between checks
    rounds = improved = 0
    last_round = 1.0
    last_check = time.monotonic()

    def check() -> None:
        nonlocal current, verified, score, estimate, last_check
        violations, checked = violations_and_score(inst, current)
        if violations or checked < score:
            current = verified  # a modelling slip: never hand it out
        else:
            verified, score = current, checked
        estimate = float(score)
        last_check = time.monotonic()

    # Start a round only when one as long as the last fits in what is left.
    while (left := time_limit - (time.monotonic() - began)) > last_round:
        round_began = time.monotonic()
        free = _neighbourhood(inst, current, rng)
        fixed = [s for s in current.sessions if s.case not in free]
        built = build_model(inst, candidates(inst, pool, current, free), fixed)
        hinted = built.value_of(_hint(inst, built, current))
        solver = _solver(min(NEIGHBOURHOOD_SECONDS, left - 0.5), workers, prove=True)
        status = solver.solve(built.model)
        rounds += 1
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.objective_value > hinted:
            current = _schedule(inst, fixed, built, solver)
            improved += 1
            estimate += (solver.objective_value - hinted) / SCALE
            sink(Progress(estimate, ceiling, time.monotonic() - began))
            if time.monotonic() - last_check > CHECK_EVERY_SECONDS:
                check()
        last_round = time.monotonic() - round_began
    if current is not verified:
        check()
    return SolveReport(
        verified,
        f"{improved} of {rounds} neighbourhoods improved",
        float(score),
        ceiling,
        time.monotonic() - began,
        "cp-sat-lns" if verified is not baseline else "baseline",
    )


def _neighbourhood(inst: Instance, current: Schedule, rng: random.Random) -> set[str]:
    """Cases to re-plan together, by one of three views of what holds the
    schedule back, taken in turn at random: cases left short and the cases
    holding the counselors they could see; one counselor's cases and those
    who could take their place; one agency's cases, whose shared budget a
    cheaper counselor could stretch to more sessions."""
    booked: dict[str, int] = defaultdict(int)
    by_counselor: dict[str, set[str]] = defaultdict(set)
    for session in current.sessions:
        booked[session.case] += 1
        by_counselor[session.counselor].add(session.case)
    short = [c for c in inst.cases if booked[c.id] < c.sessions]
    size = NEIGHBOURHOOD_CASES
    view = rng.random()
    if view < 0.4 or not current.sessions:
        free = {c.id for c in rng.sample(short, min(size // 2, len(short)))}
        rivals = {
            rival
            for c in free
            for k in inst.qualified(inst.case_by_id[c])
            for rival in by_counselor[k.id]
        }
    elif view < 0.7:
        counselor = rng.choice(sorted(by_counselor))
        free = set(
            rng.sample(
                sorted(by_counselor[counselor]), min(size // 2, len(by_counselor[counselor]))
            )
        )
        rivals = {c.id for c in short if any(k.id == counselor for k in inst.qualified(c))}
    else:
        agency = rng.choice(inst.agencies).id
        own = [c.id for c in inst.cases if c.agency == agency]
        free = {c.id for c in short if c.agency == agency}
        free = set(rng.sample(sorted(free), min(size // 2, len(free))))
        rivals = set(own)
    rivals -= free
    free |= set(rng.sample(sorted(rivals), min(size - len(free), len(rivals))))
    others = sorted({c.id for c in inst.cases} - free)
    free |= set(rng.sample(others, min(size - len(free), len(others))))
    return free


def _solver(seconds: float, workers: int, prove: bool = False) -> cp_model.CpSolver:
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


def _schedule(
    inst: Instance, fixed: Sequence[Session], built: Model, solver: cp_model.CpSolver
) -> Schedule:
    chosen = [cand.session() for cand, var in built.chosen.items() if solver.value(var)]
    sessions = tuple(sorted([*fixed, *chosen], key=lambda s: (s.start, s.counselor, s.case)))
    return Schedule(inst.name, sessions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl match solve", description="Optimized matching of an instance with CP-SAT."
    )
    parser.add_argument("instance")
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("-o", "--output", help="schedule file (default: stdout)")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="write each better score to stderr as a JSON line (best, bound, gap, elapsed)",
    )
    args = parser.parse_args(argv)
    try:
        inst = load_instance(args.instance)
    except (OSError, FormatError) as error:
        print(f"solve: cannot read input: {error}", file=sys.stderr)
        return 2

    def progress(p: Progress) -> None:
        line = {"best": p.best, "bound": p.bound, "gap": p.gap, "elapsed": p.elapsed}
        print(json.dumps(line), file=sys.stderr, flush=True)

    report = solve(inst, args.time_limit, on_progress=progress if args.progress else None)
    schedule = Schedule(
        report.schedule.instance,
        report.schedule.sessions,
        report.schedule.unserved,
        {
            "engine": report.used,
            "status": report.status,
            "objective": round(report.objective, 2),
            "bound": None if report.bound is None else round(report.bound, 2),
            "wall_seconds": round(report.seconds, 2),
        },
    )
    text = json.dumps(dump_schedule(schedule), ensure_ascii=False, indent=1) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
