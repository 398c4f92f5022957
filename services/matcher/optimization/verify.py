"""Check a schedule against its instance and score it, as FORMAT.md defines.

    python -m services.matcher.optimization.verify INSTANCE.json SCHEDULE.json

prints one JSON summary (the keys of the benchmark's check_schedule.py, plus
`other_sessions`, `moves`, `violations_by_rule` and `warnings`) and exits 0 when the
schedule keeps every hard rule, 1 when it breaks one, 2 when a file cannot
be read.

Arithmetic is exact (money, hours and waits as fractions), so a budget spent
to the last dollar is kept, not broken by float error; the summary rounds as
the referee does (waits and score to 0.01 NT$/day, cost to the dollar).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from math import floor

from services.matcher.optimization import booked
from services.matcher.optimization.instance import (
    Case,
    CaseKind,
    Counselor,
    FormatError,
    Instance,
    Provider,
    Schedule,
    Session,
    format_time,
    load_instance,
    load_schedule,
)
from services.rules.office_time import iso_week

# How many violations the summary lists; the count is always whole.
SUMMARY_VIOLATIONS = 20
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Violation:
    """One broken hard rule: its number in FORMAT.md, where, and what."""

    rule: int
    where: str
    problem: str
    case: str | None = None
    session: int | None = None  # index in the schedule's sessions

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.where}: {self.problem}"


@dataclass(frozen=True)
class Verdict:
    instance: str | None
    violations: tuple[Violation, ...]
    warnings: tuple[str, ...]
    crisis_sessions: int
    other_sessions: int
    crisis_cases_served: int
    crisis_cases: int
    cases_served: int
    cases: int
    continuity_sessions: int
    wait_days: Fraction
    cost_ntd: Fraction
    score: Fraction
    sessions_upper_bound: int
    sessions_budget_bound: int
    moves: int = 0  # booked sessions moved (re-planning, booked.py)

    @property
    def feasible(self) -> bool:
        return not self.violations

    @property
    def sessions(self) -> int:
        return self.crisis_sessions + self.other_sessions

    def broken_rules(self) -> set[int]:
        return {v.rule for v in self.violations}

    def summary(self) -> dict[str, object]:
        by_rule = Counter(v.rule for v in self.violations)
        return {
            "instance": self.instance,
            "feasible": self.feasible,
            "violations": [str(v) for v in self.violations[:SUMMARY_VIOLATIONS]],
            "violation_count": len(self.violations),
            "sessions": self.sessions,
            "crisis_sessions": self.crisis_sessions,
            "crisis_cases_served": self.crisis_cases_served,
            "crisis_cases": self.crisis_cases,
            "cases_served": self.cases_served,
            "cases": self.cases,
            "continuity_sessions": self.continuity_sessions,
            "wait_days": _hundredths(self.wait_days),
            "cost_ntd": round(self.cost_ntd),
            "score": _hundredths(self.score),
            "sessions_upper_bound": self.sessions_upper_bound,
            "sessions_budget_bound": self.sessions_budget_bound,
            "other_sessions": self.other_sessions,
            "moves": self.moves,
            "violations_by_rule": {str(r): by_rule[r] for r in sorted(by_rule)},
            "warnings": list(self.warnings),
        }


def _hundredths(value: Fraction) -> float:
    # Rounding the exact value (half to even, like Python's round on a float
    # that sits exactly on the half) and only then making it a float.
    return float(round(value, 2))


@dataclass(frozen=True)
class _Placed:
    """A session whose case and counselor the instance knows."""

    index: int
    session: Session
    case: Case
    counselor: Counselor
    provider: Provider

    @property
    def where(self) -> str:
        s = self.session
        return f"session {self.index} ({s.case} with {s.counselor} at {format_time(s.start)})"

    def broken(self, rule: int, problem: str) -> Violation:
        return Violation(rule, self.where, problem, case=self.case.id, session=self.index)


# --- the hard rules ----------------------------------------------------------


def _place(inst: Instance, sessions: Sequence[Session]) -> tuple[list[_Placed], list[Violation]]:
    """Resolve ids. A session naming an unknown case or counselor cannot
    satisfy rule 1 (no such counselor is qualified for no such case), and
    like the referee we leave it out of every other check and the score."""
    placed: list[_Placed] = []
    unknown: list[Violation] = []
    for i, s in enumerate(sessions):
        case = inst.case_by_id.get(s.case)
        counselor = inst.counselor_by_id.get(s.counselor)
        if case is None or counselor is None:
            what = "case" if case is None else "counselor"
            name = s.case if case is None else s.counselor
            unknown.append(
                Violation(
                    1, f"session {i} ({s.case})", f"unknown {what} {name!r}", case=s.case, session=i
                )
            )
            continue
        provider = inst.provider_by_id[counselor.provider]
        placed.append(_Placed(i, s, case, counselor, provider))
    return placed, unknown


def _rule1_qualified(placed: Iterable[_Placed]) -> Iterable[Violation]:
    """Rule 1: specialty, not excluded, a modality both sides accept."""
    for p in placed:
        if p.case.category not in p.counselor.specialties:
            yield p.broken(1, f"counselor lacks the specialty {p.case.category!r}")
        if p.counselor.id in p.case.excluded_counselors:
            yield p.broken(1, "the case excludes this counselor")
        modality = p.session.modality
        if modality not in p.case.modalities or modality not in p.counselor.modalities:
            yield p.broken(1, f"modality {modality!r} is not accepted by both case and counselor")


def _rule2_slot(inst: Instance, placed: Iterable[_Placed]) -> Iterable[Violation]:
    """Rule 2: the case's length, on the grid, inside one availability
    interval of each side, inside the horizon."""
    rules = inst.rules
    for p in placed:
        s = p.session
        if s.minutes != p.case.minutes:
            yield p.broken(2, f"lasts {s.minutes} min, the case asks for {p.case.minutes}")
        if not rules.min_session_minutes <= s.minutes <= rules.max_session_minutes:
            # The referee counts this too: rules bound every session's length.
            yield p.broken(
                2,
                f"lasts {s.minutes} min, outside the allowed "
                f"{rules.min_session_minutes}-{rules.max_session_minutes}",
            )
        if (s.start.hour * 60 + s.start.minute) % inst.slot_minutes:
            yield p.broken(2, f"starts off the {inst.slot_minutes}-minute grid")
        if not (inst.horizon.start <= s.start and s.end <= inst.horizon.end):
            yield p.broken(2, "lies outside the horizon")
        if not any(iv.holds(s.start, s.end) for iv in p.counselor.availability):
            yield p.broken(2, "not inside one of the counselor's availability intervals")
        if not any(iv.holds(s.start, s.end) for iv in p.case.availability):
            yield p.broken(2, "not inside one of the case's availability intervals")


def _rule3_counselor_load(placed: Iterable[_Placed]) -> Iterable[Violation]:
    """Rule 3: no overlap, at most max_sessions_per_day per calendar day
    (the day a session starts on)."""
    by_counselor: dict[str, list[_Placed]] = defaultdict(list)
    for p in placed:
        by_counselor[p.counselor.id].append(p)
    for counselor_id, own in by_counselor.items():
        own.sort(key=lambda p: (p.session.start, p.index))
        running: list[_Placed] = []  # sessions still going at the current start
        for p in own:
            running = [q for q in running if q.session.end > p.session.start]
            for q in running:
                yield p.broken(3, f"overlaps {q.where}: counselor {counselor_id} double-booked")
            running.append(p)
        per_day = Counter(p.session.start.date() for p in own)
        limit = own[0].counselor.max_sessions_per_day
        for day, n in sorted(per_day.items()):
            if n > limit:
                yield Violation(
                    3, f"counselor {counselor_id}", f"{n} sessions on {day}, at most {limit}"
                )


def _rule4_case_and_employee(inst: Instance, placed: Sequence[_Placed]) -> Iterable[Violation]:
    """Rule 4: sessions per case; per employee, sessions per ISO week and
    hours in all (the employee's cases together)."""
    per_case = Counter(p.case.id for p in placed)
    for case_id, n in per_case.items():
        wanted = inst.case_by_id[case_id].sessions
        if n > wanted:
            yield Violation(4, f"case {case_id}", f"{n} sessions, wants {wanted}", case=case_id)
    weekly: dict[tuple[str, int, int], list[_Placed]] = defaultdict(list)
    minutes: Counter[str] = Counter()
    cases_of: dict[str, set[str]] = defaultdict(set)
    entitlement: dict[str, Fraction] = {}
    for p in placed:
        weekly[(p.case.employee, *iso_week(p.session.start))].append(p)
        minutes[p.case.employee] += p.session.minutes
        cases_of[p.case.employee].add(p.case.id)
        entitlement[p.case.employee] = p.case.employee_remaining_hours
    limit = inst.rules.max_sessions_per_week
    for (_, year, week), own in weekly.items():
        if len(own) > limit:
            yield Violation(
                4,
                f"employee of {_cases(c.case.id for c in own)}",
                f"{len(own)} sessions in ISO week {year}-W{week:02d}, at most {limit}",
                case=own[0].case.id,
            )
    for employee, used in minutes.items():
        if used > entitlement[employee] * 60:
            yield Violation(
                4,
                f"employee of {_cases(cases_of[employee])}",
                f"{_amount(Fraction(used, 60))} h booked, "
                f"entitlement {_amount(entitlement[employee])} h",
                case=min(cases_of[employee]),
            )


def _cases(ids: Iterable[str]) -> str:
    # Name cases, not employees: the suite keeps people out of its messages.
    unique = sorted(set(ids))
    return ("case " if len(unique) == 1 else "cases ") + ", ".join(unique)


def _rule5_provider_caps(inst: Instance, placed: Iterable[_Placed]) -> Iterable[Violation]:
    """Rule 5: a provider's counselors together within its hours cap."""
    minutes: Counter[str] = Counter()
    for p in placed:
        minutes[p.provider.id] += p.session.minutes
    for provider_id, used in minutes.items():
        cap = inst.provider_by_id[provider_id].hours_cap
        if used > cap * 60:
            yield Violation(
                5,
                f"provider {provider_id}",
                f"{_amount(Fraction(used, 60))} h, cap {_amount(cap)} h",
            )


def _rule6_agency_budgets(inst: Instance, placed: Iterable[_Placed]) -> Iterable[Violation]:
    """Rule 6: an agency's cases cost at most its budget."""
    spent: Counter[str] = Counter()
    for p in placed:
        spent[p.case.agency] += p.provider.cost(p.session.minutes)
    for agency_id, cost in spent.items():
        budget = inst.agency_by_id[agency_id].budget_ntd
        if cost > budget:
            yield Violation(
                6,
                f"agency {agency_id}",
                f"sessions cost {_amount(Fraction(cost))} NT$, budget {_amount(budget)}",
            )


def _rule7_crisis_deadline(inst: Instance, placed: Sequence[_Placed]) -> Iterable[Violation]:
    """Rule 7: a served crisis case starts within the deadline of
    max(submitted, horizon start); the deadline itself still counts."""
    deadline = inst.rules.crisis_deadline
    for case_id, own in _by_case(placed).items():
        case = own[0].case
        if case.kind is not CaseKind.CRISIS:
            continue
        first = own[0]
        late = first.session.start - inst.reference_time(case) - deadline
        if late > timedelta(0):
            yield first.broken(
                7,
                f"first session of crisis case {case_id} is {_hours(late)} h past the "
                f"{_amount(inst.rules.crisis_deadline_hours)} h deadline",
            )


def _rule8_booked_kept(inst: Instance, placed: Sequence[_Placed]) -> Iterable[Violation]:
    """Ours, for re-planning (booked.py): a booked session may move within
    its ISO week, never away from it."""
    for gone in booked.lost(inst, [p.session for p in placed]):
        yield Violation(
            booked.KEEP_RULE,
            f"booking {gone.booking} ({gone.case} at {format_time(gone.start)})",
            "the case has no session left in the booked session's ISO week",
            case=gone.case,
        )


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g}"


def _amount(value: Fraction) -> str:
    """Hours or NT$ for people: 1.5, not 3/2."""
    return str(value.numerator) if value.denominator == 1 else repr(float(value))


def _by_case(placed: Iterable[_Placed]) -> dict[str, list[_Placed]]:
    out: dict[str, list[_Placed]] = defaultdict(list)
    for p in sorted(placed, key=lambda p: (p.session.start, p.index)):
        out[p.case.id].append(p)
    return out


def _violations(
    inst: Instance, placed: Sequence[_Placed], unknown: Sequence[Violation]
) -> list[Violation]:
    found = [*unknown, *_rule1_qualified(placed)]
    found += _rule2_slot(inst, placed)
    found += _rule3_counselor_load(placed)
    found += _rule4_case_and_employee(inst, placed)
    found += _rule5_provider_caps(inst, placed)
    found += _rule6_agency_budgets(inst, placed)
    found += _rule7_crisis_deadline(inst, placed)
    found += _rule8_booked_kept(inst, placed)
    return sorted(found, key=lambda v: v.rule)  # stable: each rule's order kept


# --- the objective -------------------------------------------------------------


@dataclass(frozen=True)
class _Terms:
    crisis_sessions: int
    other_sessions: int
    continuity_sessions: int
    wait_minutes: int
    cost_ntd: Fraction
    crisis_cases_served: int
    cases_served: int
    moves: int = 0  # booked sessions not kept in place (booked.py)


def _continuity(case: Case, own: Sequence[_Placed]) -> int:
    """Sessions held by the anchor: the preferred counselor when set, else
    whoever holds the most (a tie does not change the count)."""
    held = Counter(p.counselor.id for p in own)
    if case.preferred_counselor is not None:
        return held[case.preferred_counselor]
    return max(held.values())


def _wait_minutes(inst: Instance, case: Case, first: datetime | None) -> int:
    """From max(submitted, horizon start) to the first session, or to the
    horizon's end when there is none; never negative (a session booked
    before submission, or a case submitted after the horizon, waits 0)."""
    until = inst.horizon.end if first is None else first
    return max(0, (until - inst.reference_time(case)) // timedelta(minutes=1))


def _terms(inst: Instance, placed: Sequence[_Placed]) -> _Terms:
    served = _by_case(placed)
    crisis = other = continuity = crisis_served = 0
    for case_id, own in served.items():
        case = inst.case_by_id[case_id]
        if case.kind is CaseKind.CRISIS:
            crisis += len(own)
            crisis_served += 1
        else:
            other += len(own)
        continuity += _continuity(case, own)
    wait = sum(
        _wait_minutes(inst, c, served[c.id][0].session.start if c.id in served else None)
        for c in inst.cases
    )
    cost = Fraction(sum(p.provider.cost(p.session.minutes) for p in placed))
    moved = booked.moved_count(inst, [p.session for p in placed])
    return _Terms(crisis, other, continuity, wait, cost, crisis_served, len(served), moved)


def score_of(inst: Instance, terms: _Terms) -> Fraction:
    w = inst.weights
    return (
        w.crisis_session * terms.crisis_sessions
        + w.session * terms.other_sessions
        + w.continuity * terms.continuity_sessions
        - w.wait_day * Fraction(terms.wait_minutes, MINUTES_PER_DAY)
        - w.cost_per_kntd * terms.cost_ntd / 1000
        - w.move * terms.moves
    )


# --- upper bounds --------------------------------------------------------------


def _case_ceiling(inst: Instance, case: Case) -> int:
    """Sessions a case could get were budgets, caps and clashes no matter:
    none without a qualified counselor or any availability; else bounded by
    what it wants, by the weekly limit over the ISO weeks its availability
    intervals start in, and by its entitlement in whole sessions. (The
    referee's definition, kept so that the two bounds agree.)"""
    if not case.availability or not inst.qualified(case):
        return 0
    weeks = {iso_week(iv.start) for iv in case.availability}
    by_hours = floor(case.employee_remaining_hours * 60 / case.minutes)
    return min(case.sessions, len(weeks) * inst.rules.max_sessions_per_week, by_hours)


def sessions_upper_bound(inst: Instance) -> int:
    """Sessions served if budgets, provider caps and clashes did not bind."""
    return sum(_case_ceiling(inst, c) for c in inst.cases)


def sessions_budget_bound(inst: Instance) -> int:
    """Also spend each agency's budget on its cases' sessions at their
    cheapest qualified rate, cheapest first, as a fractional knapsack:
    the first session that no longer fits whole ends that agency's count."""
    wishes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for case in inst.cases:
        n = _case_ceiling(inst, case)
        if n:
            cheapest = min(inst.session_cost(k, case.minutes) for k in inst.qualified(case))
            wishes[case.agency].append((cheapest, n))
    total = 0
    for agency in inst.agencies:
        left = agency.budget_ntd
        for unit, n in sorted(wishes[agency.id]):
            take = n if unit == 0 else min(n, floor(left / unit))
            total += take
            left -= take * unit
            if take < n:
                break
    return total


def score_upper_bound(inst: Instance) -> Fraction:
    """A score no schedule can beat: each case on its own, as if no other
    case, budget, cap or clash were there, gets its ceiling of sessions,
    all with its anchor, at its cheapest qualified rate, starting the moment
    it may; a case that can have none waits the whole horizon. Loose, but
    proven, and cheap enough for any instance."""
    w = inst.weights
    total = Fraction(0)
    for case in inst.cases:
        reference = inst.reference_time(case)
        idle = max(inst.horizon.end - reference, timedelta())
        unserved = -w.wait_day * Fraction(int(idle.total_seconds() // 60), MINUTES_PER_DAY)
        n = _case_ceiling(inst, case)
        if n and case.kind is CaseKind.CRISIS:
            deadline = reference + inst.rules.crisis_deadline
            if not any(iv.start <= deadline and iv.end > reference for iv in case.availability):
                n = 0
        if not n:
            total += unserved
            continue
        per_session = w.crisis_session if case.kind is CaseKind.CRISIS else w.session
        cheapest = min(inst.session_cost(k, case.minutes) for k in inst.qualified(case))
        served = n * (per_session + w.continuity - w.cost_per_kntd * cheapest / 1000)
        total += max(served, unserved)
    return total


# --- putting it together -------------------------------------------------------


def _warnings(inst: Instance, schedule: Schedule, placed: Sequence[_Placed]) -> list[str]:
    """Oddities that break no hard rule but are worth a look."""
    out: list[str] = []
    if schedule.instance != inst.name:
        out.append(f"schedule is for instance {schedule.instance!r}, not {inst.name!r}")
    for p in placed:
        if p.session.start < p.case.submitted:
            out.append(f"{p.where}: starts before the case was submitted")
    got = Counter(p.case.id for p in placed)
    for u in schedule.unserved:
        case = inst.case_by_id.get(u.case)
        if case is None:
            out.append(f"unserved: unknown case {u.case!r}")
        elif u.missing != case.sessions - got[u.case]:
            out.append(
                f"unserved: case {u.case} says {u.missing} missing, "
                f"the schedule leaves {case.sessions - got[u.case]}"
            )
    return out


def violations_and_score(inst: Instance, schedule: Schedule) -> tuple[list[Violation], Fraction]:
    """The hard-rule violations and the score, without the rest of a
    verdict: what a search needs to accept a schedule, many times over."""
    placed, unknown = _place(inst, schedule.sessions)
    return _violations(inst, placed, unknown), score_of(inst, _terms(inst, placed))


def verify(inst: Instance, schedule: Schedule) -> Verdict:
    placed, unknown = _place(inst, schedule.sessions)
    terms = _terms(inst, placed)
    return Verdict(
        instance=inst.name,
        violations=tuple(_violations(inst, placed, unknown)),
        warnings=tuple(_warnings(inst, schedule, placed)),
        crisis_sessions=terms.crisis_sessions,
        other_sessions=terms.other_sessions,
        crisis_cases_served=terms.crisis_cases_served,
        crisis_cases=sum(1 for c in inst.cases if c.kind is CaseKind.CRISIS),
        cases_served=terms.cases_served,
        cases=len(inst.cases),
        continuity_sessions=terms.continuity_sessions,
        wait_days=Fraction(terms.wait_minutes, MINUTES_PER_DAY),
        cost_ntd=terms.cost_ntd,
        score=score_of(inst, terms),
        sessions_upper_bound=sessions_upper_bound(inst),
        sessions_budget_bound=sessions_budget_bound(inst),
        moves=terms.moves,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.matcher.optimization.verify",
        description="Check a schedule against its instance; print a JSON summary.",
    )
    parser.add_argument("instance")
    parser.add_argument("schedule")
    args = parser.parse_args(argv)
    try:
        inst = load_instance(args.instance)
        schedule = load_schedule(args.schedule, inst)
    except (OSError, FormatError) as e:
        print(f"verify: cannot read input: {e}", file=sys.stderr)
        return 2
    verdict = verify(inst, schedule)
    print(json.dumps(verdict.summary(), ensure_ascii=False))
    return 0 if verdict.feasible else 1


if __name__ == "__main__":
    sys.exit(main())
