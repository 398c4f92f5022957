"""Large-neighbourhood search for instances too big for one model: many
rounds, each freeing a few dozen cases, planning them with CP-SAT against
what every other case holds, and keeping the result when it scores better.

A round costs what its cases cost, not what the instance does: what the
others hold is a `Load` updated session by session, and a freed case is
offered only the slots that load leaves free, so the model carries no
fixed sessions at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ortools.sat.python import cp_model

from services.matcher.optimization.instance import Instance, Schedule
from services.matcher.optimization.model import (
    SCALE,
    Candidate,
    CandidatePool,
    Costs,
    Load,
    build_model,
    chosen_sessions,
    cp_solver,
    hint,
    schedule_of,
    spread,
    with_sessions,
)
from services.matcher.optimization.verify import violations_and_score

NEIGHBOURHOOD_CASES = 25  # cases re-planned together
NEIGHBOURHOOD_SECONDS = 0.5  # the most one round may search
CANDIDATES_PER_CASE = 150  # large instances offer a case hundreds of free slots
CHECK_EVERY_SECONDS = 5.0  # how often the search verifies its schedule


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


@dataclass(frozen=True)
class Outcome:
    schedule: Schedule  # verified: keeps every rule
    score: float
    rounds: int
    improved: int


def search(
    inst: Instance,
    start: Schedule,
    deadline: float,
    workers: int,
    seed: int,
    report: Callable[[float], None],
) -> Outcome:
    """Improves `start` until `deadline` (time.monotonic()); `report`
    hears the score of every better schedule."""
    rng = random.Random(seed)
    pool = CandidatePool(inst)
    load = Load(inst, Costs(inst), start.sessions)
    # The model keeps every rule, so a round that beats its hint is taken
    # on the model's word; the verifier, too slow to run every round on
    # large instances, checks the schedule every few seconds and at the end,
    # and a schedule it rejects is dropped for the last one it passed.
    verified = start
    checking = time.monotonic()
    score = violations_and_score(inst, start)[1]
    check_seconds = time.monotonic() - checking  # kept for the check at the end
    estimate = float(score)  # the model's word, between checks
    rounds = improved = 0
    last_round = 0.2
    last_check = time.monotonic()
    changed = False

    def check() -> None:
        nonlocal verified, score, estimate, last_check, load, changed
        current = schedule_of(inst, load.sessions())
        violations, checked = violations_and_score(inst, current)
        if violations or checked < score:
            load = Load(inst, Costs(inst), verified.sessions)  # a modelling slip: drop it
        else:
            verified, score = current, checked
        estimate = float(score)
        last_check = time.monotonic()
        changed = False

    # Start a round only when one as long as the last fits in what is left.
    while (left := deadline - check_seconds - time.monotonic()) > last_round:
        round_began = time.monotonic()
        free = _neighbourhood(inst, load, rng)
        freed = [s for case_id in free for s in load.sessions_of_case.get(case_id, ())]
        for session in freed:
            load.remove(session)
        cands: list[Candidate] = []
        for case_id in sorted(free):
            case = inst.case_by_id[case_id]
            found = pool.free(case, load)
            cands.extend(spread(case, found, CANDIDATES_PER_CASE, rng, keep=pool.booked))
        built = build_model(inst, with_sessions(inst, cands, freed), load)
        hinted = built.value_of(hint(inst, built, freed))
        solver = cp_solver(min(NEIGHBOURHOOD_SECONDS, max(left - 0.1, 0.05)), workers)
        # A round's model is small and starts from a complete hint: presolve
        # (its probing above all) would take most of the round's time.
        solver.parameters.cp_model_presolve = False
        status = solver.solve(built.model)
        rounds += 1
        planned = freed
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.objective_value > hinted:
            planned = chosen_sessions(built, solver)
            improved += 1
            changed = True
            estimate += (solver.objective_value - hinted) / SCALE
            report(estimate)
        for session in planned:
            load.add(session)
        if changed and time.monotonic() - last_check > CHECK_EVERY_SECONDS:
            check()
        last_round = time.monotonic() - round_began
    if changed:
        check()
    return Outcome(verified, float(score), rounds, improved)


def _neighbourhood(inst: Instance, load: Load, rng: random.Random) -> set[str]:
    """Cases to re-plan together, by one of four views of what holds the
    schedule back, taken in turn at random: cases left short and the cases
    holding the counselors they could see; one counselor's cases and those
    who could take their place; one agency's cases, whose shared budget a
    cheaper counselor could stretch to more sessions; one provider's cases
    with long sessions and short cases it could serve, since where a
    provider's hours run out, two short sessions are worth more than one
    long one."""
    by_counselor = {k.id: load.cases_of(k.id) for k in inst.counselors}
    booked = {case_id: len(own) for case_id, own in load.sessions_of_case.items()}
    short = [c for c in inst.cases if booked.get(c.id, 0) < c.sessions]
    size = NEIGHBOURHOOD_CASES
    view = rng.random()
    holding = sorted(k for k, cases in by_counselor.items() if cases)
    if view < 0.35 or not holding:
        free = {c.id for c in rng.sample(short, min(size // 2, len(short)))}
        rivals = {
            rival
            for c in free
            for k in inst.qualified(inst.case_by_id[c])
            for rival in by_counselor[k.id]
        }
    elif view < 0.6:
        counselor = rng.choice(holding)
        own = sorted(by_counselor[counselor])
        free = set(rng.sample(own, min(size // 2, len(own))))
        rivals = {c.id for c in short if any(k.id == counselor for k in inst.qualified(c))}
    elif view < 0.8:
        agency = rng.choice(inst.agencies).id
        mine = [c.id for c in inst.cases if c.agency == agency]
        free = {c.id for c in short if c.agency == agency}
        free = set(rng.sample(sorted(free), min(size // 2, len(free))))
        rivals = set(mine)
    else:
        provider = rng.choice(inst.providers).id
        theirs = {k.id for k in inst.counselors if k.provider == provider}
        held = sorted({c for k in theirs for c in by_counselor[k]})
        long = [c for c in held if inst.case_by_id[c].minutes > inst.rules.min_session_minutes]
        free = set(rng.sample(long, min(size // 4, len(long))))
        free |= set(rng.sample(held, min(size // 4, len(held))))
        rivals = {
            c.id
            for c in short
            if c.minutes == inst.rules.min_session_minutes
            and any(k.id in theirs for k in inst.qualified(c))
        }
    rivals -= free
    free |= set(rng.sample(sorted(rivals), min(size - len(free), len(rivals))))
    others = sorted({c.id for c in inst.cases} - free)
    free |= set(rng.sample(others, min(size - len(free), len(others))))
    return free
