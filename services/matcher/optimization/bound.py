"""A bound on the score that holds for the instance, not for a pruned
model: the linear relaxation of FORMAT.md's problem over every start the
rules allow, solved with GLOP, and certified from its duals.

Every schedule that keeps FORMAT.md's hard rules, and the matcher's own
that nobody is seen before their case was submitted (the format's data
says the case did not exist yet; its checker lets such a session pass,
our verifier warns of it), is a point of this relaxation,
so its optimum is at least every schedule's score, whatever candidates a
search kept. The relaxation states each rule where the linear programme
can see it:

- rule 3 as one row per counselor and start time: the sessions covering
  that moment are at most one (on an interval graph these clique rows are
  the whole truth of no-overlap), and the day's sessions at most its limit;
- rule 4 per case, per employee and ISO week, and per employee's minutes;
- rules 5 and 6 per provider and per agency, at the quota's whole-NT$ cost;
- rule 7: a crisis case's late sessions need an early one (at most
  sessions - 1 of them per early session; none at all for a single session);
- waiting as a first-session flag per case and start, at most one per case,
  each only as high as the sessions at that start;
- continuity on every session that could be with the anchor.

On large instances a variable per start would not fit in the time, so the
starts of a case with one counselor on one day are merged into one
variable (`Granularity.DAY`): the counselor's day then holds at most its
available minutes and its daily limit, and the merged variable takes the
day's earliest start for the wait and the crisis deadline, both in the
schedule's favour. Still a relaxation, looser.

The bound is not GLOP's objective (a floating-point optimum, within its
tolerances) but the dual bound of its duals: for any non-negative row
prices y, b·y plus each variable's positive reduced cost times its upper
bound is at least the optimum. Any y gives a valid bound; the optimal one
gives the tightest.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from fractions import Fraction

import numpy as np
from ortools.linear_solver import pywraplp

from services.matcher.optimization.instance import CaseKind, Instance
from services.rules.office_time import iso_week

DAY = 1440
START_LIMIT = 20_000  # candidate starts the per-start relaxation takes on; beyond, per day


class Granularity(Enum):
    START = "start"  # a variable per case, counselor and start
    DAY = "day"  # per case, counselor and day


@dataclass(frozen=True)
class Bound:
    value: float  # the score no schedule of the instance exceeds
    granularity: Granularity
    variables: int
    seconds: float
    lp_optimal: bool  # GLOP solved it to optimality (else the duals it had)


class _Lp:
    """A maximisation max c·x, A x <= b, 0 <= x <= u, kept as arrays too, so
    that the dual bound can be worked out outside the solver."""

    def __init__(self) -> None:
        self.c: list[float] = []
        self.u: list[float] = []
        self.b: list[float] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []

    def var(self, value: float, upper: float = 1.0) -> int:
        self.c.append(value)
        self.u.append(upper)
        return len(self.c) - 1

    def row(self, terms: list[tuple[int, float]], rhs: float) -> None:
        at = len(self.b)
        self.b.append(rhs)
        for col, coefficient in terms:
            self.rows.append(at)
            self.cols.append(col)
            self.vals.append(coefficient)

    def solve(self, seconds: float, engine: str = "GLOP") -> tuple[float, bool]:
        """The certified bound (before the objective's constant)."""
        solver = pywraplp.Solver.CreateSolver(engine)
        solver.SetTimeLimit(max(int(seconds * 1000), 1))
        xs = [solver.NumVar(0.0, u, "") for u in self.u]
        constraints = [solver.Constraint(-solver.infinity(), b) for b in self.b]
        for r, col, v in zip(self.rows, self.cols, self.vals, strict=True):
            constraints[r].SetCoefficient(xs[col], v)
        objective = solver.Objective()
        for x, c in zip(xs, self.c, strict=True):
            objective.SetCoefficient(x, c)
        objective.SetMaximization()
        status = solver.Solve()
        if status in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
            prices = np.array([max(k.dual_value(), 0.0) for k in constraints])
        else:
            prices = np.zeros(len(self.b))  # still a bound: every variable at its best
        return self.dual_bound(prices), status == pywraplp.Solver.OPTIMAL

    def dual_bound(self, prices: np.ndarray) -> float:
        rows, cols = np.array(self.rows, dtype=np.int64), np.array(self.cols, dtype=np.int64)
        priced = np.bincount(
            cols, weights=np.array(self.vals) * prices[rows], minlength=len(self.c)
        )
        reduced = np.array(self.c) - priced
        return float(
            np.dot(np.array(self.b), prices) + np.dot(np.array(self.u), np.maximum(reduced, 0))
        )


def _day_minutes(inst: Instance) -> dict[tuple[str, int], int]:
    """Each counselor's available minutes per day of the horizon."""
    end = inst.horizon.weeks * 7 * DAY
    found: dict[tuple[str, int], int] = defaultdict(int)
    for k in inst.counselors:
        for iv in k.availability:
            begin, finish = max(inst.minute_of(iv.start), 0), min(inst.minute_of(iv.end), end)
            while begin < finish:
                cut = min(finish, (begin // DAY + 1) * DAY)
                found[(k.id, begin // DAY)] += cut - begin
                begin = cut
    return found


def relaxation_bound(
    inst: Instance, seconds: float, granularity: Granularity | None = None, engine: str = "GLOP"
) -> Bound:
    """The bound, within about `seconds` (building included; a GLOP cut
    short by the limit still gives a valid, looser bound)."""
    began = time.monotonic()
    w = inst.weights
    per_minute_waited = float(w.wait_day) / DAY
    deadline = inst.rules.crisis_deadline
    origin = inst.horizon.start
    horizon_minutes = inst.horizon.weeks * 7 * DAY
    starts_of = {
        (case.id, k.id): inst.start_minutes(case, k)
        for case in inst.cases
        for k in inst.qualified(case)
    }
    if granularity is None:
        total = sum(len(s) for s in starts_of.values())
        granularity = Granularity.START if total <= START_LIMIT else Granularity.DAY
    lp = _Lp()
    constant = 0.0
    # Rows gathered by what they limit, then written once each.
    weekly: dict[tuple[str, tuple[int, int]], list[tuple[int, float]]] = defaultdict(list)
    employee_minutes: dict[str, list[tuple[int, float]]] = defaultdict(list)
    entitlement: dict[str, Fraction] = {}
    provider_minutes: dict[str, list[tuple[int, float]]] = defaultdict(list)
    agency_cost: dict[str, list[tuple[int, float]]] = defaultdict(list)
    per_day: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    day_energy: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    covering: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # begin, end, var
    for case in inst.cases:
        reference = inst.reference_time(case)
        idle = max(inst.horizon.end - reference, timedelta())
        idle_minutes = int(idle.total_seconds() // 60)
        constant -= per_minute_waited * idle_minutes
        crisis = case.kind is CaseKind.CRISIS
        early_until = inst.minute_of(reference + deadline)
        per_session = float(w.crisis_session if crisis else w.session)
        own: list[tuple[int, float]] = []
        early: list[tuple[int, float]] = []
        late: list[tuple[int, float]] = []
        at_start: dict[int, list[int]] = defaultdict(list)
        for k in inst.qualified(case):
            starts = starts_of[(case.id, k.id)]
            if granularity is Granularity.DAY:
                firsts: dict[int, int] = {}
                for s in starts:
                    firsts.setdefault(s // DAY, s)
                starts = sorted(firsts.values())
            cost = inst.session_cost(k, case.minutes)
            value = per_session - float(w.cost_per_kntd) * cost / 1000
            if case.preferred_counselor is None or case.preferred_counselor == k.id:
                value += float(w.continuity)
            for s in starts:
                is_early = s <= early_until
                if crisis and not is_early and case.sessions == 1:
                    continue  # a lone crisis session after the deadline is no session
                if s + case.minutes > horizon_minutes:
                    continue
                x = lp.var(value)
                own.append((x, 1.0))
                (early if is_early else late).append((x, 1.0))
                at_start[s].append(x)
                weekly[(case.employee, iso_week(origin + timedelta(minutes=s)))].append((x, 1.0))
                employee_minutes[case.employee].append((x, float(case.minutes)))
                provider_minutes[k.provider].append((x, float(case.minutes)))
                agency_cost[case.agency].append((x, float(cost)))
                per_day[(k.id, s // DAY)].append((x, 1.0))
                if granularity is Granularity.DAY:
                    day_energy[(k.id, s // DAY)].append((x, float(case.minutes)))
                else:
                    covering[k.id].append((s, s + case.minutes, x))
        entitlement[case.employee] = case.employee_remaining_hours
        if not own:
            continue
        lp.row(own, float(case.sessions))
        if crisis and late:
            lp.row(late + [(x, -float(case.sessions - 1)) for x, _ in early], 0.0)
        firsts_of_case = []
        for s, xs in sorted(at_start.items()):
            waited = max(s - inst.minute_of(reference), 0)
            saved = per_minute_waited * max(idle_minutes - waited, 0)
            if saved <= 0:
                continue
            f = lp.var(saved)
            lp.row([(f, 1.0)] + [(x, -1.0) for x in xs], 0.0)
            firsts_of_case.append((f, 1.0))
        if firsts_of_case:
            lp.row(firsts_of_case, 1.0)

    limit = inst.rules.max_sessions_per_week
    for terms in weekly.values():
        if len(terms) > limit:
            lp.row(terms, float(limit))
    for employee, terms in employee_minutes.items():
        lp.row(terms, float(int(entitlement[employee] * 60)))
    for provider_id, terms in provider_minutes.items():
        lp.row(terms, float(int(inst.provider_by_id[provider_id].hours_cap * 60)))
    for agency_id, terms in agency_cost.items():
        lp.row(terms, float(int(inst.agency_by_id[agency_id].budget_ntd)))
    for (counselor_id, _), terms in per_day.items():
        most = inst.counselor_by_id[counselor_id].max_sessions_per_day
        if len(terms) > most:
            lp.row(terms, float(most))
    if granularity is Granularity.DAY:
        room = _day_minutes(inst)
        for key, terms in day_energy.items():
            if sum(m for _, m in terms) > room[key]:
                lp.row(terms, float(room[key]))
    longest = inst.rules.max_session_minutes
    for intervals in covering.values():
        _clique_rows(lp, intervals, longest)
    left = seconds - (time.monotonic() - began)
    value, optimal = lp.solve(max(left, 0.5), engine)
    return Bound(value + constant, granularity, len(lp.c), time.monotonic() - began, optimal)


def _clique_rows(lp: _Lp, intervals: list[tuple[int, int, int]], longest: int) -> None:
    """No-overlap for one counselor: at each start time, the sessions that
    cover it are at most one. Rows that a later one contains are skipped."""
    intervals.sort()
    begins = [b for b, _, _ in intervals]
    points = sorted(set(begins))
    last: frozenset[int] = frozenset()
    pending: list[int] | None = None
    for t in points:
        # The intervals covering t start at or before t and end after it.
        since = bisect.bisect_right(begins, t - longest)
        upto = bisect.bisect_right(begins, t)
        live = [x for b, e, x in intervals[since:upto] if e > t]
        live_set = frozenset(live)
        if pending is not None and not last <= live_set and len(pending) > 1:
            lp.row([(x, 1.0) for x in pending], 1.0)
        pending, last = live, live_set
    if pending is not None and len(pending) > 1:
        lp.row([(x, 1.0) for x in pending], 1.0)
