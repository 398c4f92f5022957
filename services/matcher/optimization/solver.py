"""Optimized matching of cases to counselor slots with OR-Tools CP-SAT.

    python -m services.matcher.optimization.solver INSTANCE.json [--time-limit S] [-o SCHEDULE.json]

The model (`model.build_model`) has one boolean per candidate session
(case, counselor, start). Candidates are pruned before it is built: per
case, counselor and day only the earliest few starts are kept (waiting
costs, so later starts on the same day rarely win), plus every session of
the first-come-first-served schedule, which is also given to CP-SAT as its
hint. The schedule returned is the better, by our verifier's exact score,
of the solver's and the baseline's: never worse than first-come-first-served.

Small instances are one model, solved with a worker on CP-SAT's strongest
linear relaxation (plus energy cuts per availability window): that is
what proves them optimal or within a fraction of a percent. Larger ones
go by large-neighbourhood search from the baseline (`lns`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from ortools.sat.python import cp_model

from services.matcher.optimization import greedy, lns, reasons
from services.matcher.optimization.instance import (
    FormatError,
    Instance,
    Schedule,
    dump_schedule,
    load_instance,
)
from services.matcher.optimization.lns import Progress, ProgressSink
from services.matcher.optimization.model import (
    SCALE,
    CandidatePool,
    Costs,
    Load,
    build_model,
    chosen_sessions,
    cp_solver,
    hint,
    schedule_of,
    with_sessions,
)
from services.matcher.optimization.verify import score_upper_bound, verify, violations_and_score

# Up to this many cases, one model of the whole instance; beyond, neighbourhoods.
WHOLE_MODEL_CASES = 150
EXPLAIN_SECONDS_PER_CASE = 0.0006
MORE_STARTS_UP_TO = 1000  # cases; beyond, two greedy starts (seconds each on L)
STARTUP_AND_WRITE_SECONDS = 2.5  # of `match solve`'s limit: 0.8 s start-up, writing, margin

__all__ = ["Progress", "ProgressSink", "SolveReport", "main", "solve"]


@dataclass(frozen=True)
class SolveReport:
    schedule: Schedule
    status: str
    objective: float
    bound: float | None  # proven: CP-SAT's, or `score_upper_bound` where tighter; None if neither
    seconds: float
    used: str  # "cp-sat", "cp-sat-lns" or "baseline"


def solve(
    inst: Instance,
    time_limit: float = 30.0,
    workers: int = 2,
    seed: int = 1,
    on_progress: ProgressSink | None = None,
    began: float | None = None,
) -> SolveReport:
    """The best schedule found within `time_limit` seconds of `began`
    (time.monotonic(); default now): one model of the whole instance when
    it is small, else large-neighbourhood search (free a few dozen cases,
    keep the rest, re-solve, keep what improves). `on_progress` hears of
    every better schedule."""
    began = time.monotonic() if began is None else began
    baseline, start_score = _best_start(inst)
    ceiling = float(score_upper_bound(inst))
    sink = on_progress or (lambda progress: None)
    sink(Progress(float(start_score), ceiling, time.monotonic() - began))
    if len(inst.cases) <= WHOLE_MODEL_CASES:
        report = _solve_whole(inst, baseline, began, time_limit, workers, ceiling, sink)
    else:
        # Leave time to explain the unserved at the end (about 0.6 ms a case).
        deadline = began + time_limit - EXPLAIN_SECONDS_PER_CASE * len(inst.cases)

        def progress(score: float) -> None:
            sink(Progress(score, ceiling, time.monotonic() - began))

        outcome = lns.search(inst, baseline, deadline, workers, seed, progress)
        report = SolveReport(
            outcome.schedule,
            f"{outcome.improved} of {outcome.rounds} neighbourhoods improved",
            outcome.score,
            ceiling,
            0.0,
            "cp-sat-lns" if outcome.schedule is not baseline else "baseline",
        )
    # Why each case is left short, worked out once, for the schedule handed out.
    explained = replace(report.schedule, unserved=reasons.unserved(inst, report.schedule.sessions))
    return replace(report, schedule=explained, seconds=time.monotonic() - began)


def _best_start(inst: Instance) -> tuple[Schedule, Fraction]:
    """The schedule to start from: the better of first-come-first-served
    (the baseline, never to be fallen below) and the same booking in the
    order that serves the objective best (`greedy` order "value", ties to
    the cheaper counselor); where there is time, two more variants."""
    variants = [("crisis-first", False), ("value", True)]
    if len(inst.cases) <= MORE_STARTS_UP_TO:
        variants += [("crisis-first", True), ("value", False)]
    scored = []
    for rank, (order, cheapest_first) in enumerate(variants):
        start = greedy.solve(inst, order, explain=False, cheapest_first=cheapest_first)
        scored.append((violations_and_score(inst, start)[1], -rank, start))
    score, _, best = max(scored, key=lambda s: (s[0], s[1]))
    return best, score


class _Reporter(cp_model.CpSolverSolutionCallback):
    """Passes each solution CP-SAT finds on as progress."""

    def __init__(self, began: float, ceiling: float, sink: ProgressSink) -> None:
        super().__init__()
        self._began, self._ceiling, self._sink = began, ceiling, sink

    def on_solution_callback(self) -> None:
        bound = min(self.best_objective_bound / SCALE, self._ceiling)
        self._sink(Progress(self.objective_value / SCALE, bound, time.monotonic() - self._began))


def _solve_whole(
    inst: Instance,
    baseline: Schedule,
    began: float,
    time_limit: float,
    workers: int,
    ceiling: float,
    sink: ProgressSink,
) -> SolveReport:
    nothing = Load(inst, Costs(inst))
    pool = CandidatePool(inst)
    cands = [cand for case in inst.cases for cand in pool.free(case, nothing)]
    built = build_model(inst, with_sessions(inst, cands, baseline.sessions), nothing)
    hint(inst, built, baseline.sessions)
    solver = cp_solver(max(time_limit - (time.monotonic() - began), 1.0), workers, prove=True)
    status = solver.solve(built.model, _Reporter(began, ceiling, sink))
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return SolveReport(baseline, name, 0.0, None, time.monotonic() - began, "baseline")
    found = schedule_of(inst, chosen_sessions(built, solver))
    ours, theirs = verify(inst, found), verify(inst, baseline)
    better = not ours.violations and ours.score >= theirs.score
    # The score of the schedule handed out, as the verifier reckons it: when
    # the baseline is handed out, CP-SAT's objective describes a schedule
    # nobody receives.
    return SolveReport(
        found if better else baseline,
        name,
        float((ours if better else theirs).score),
        min(solver.best_objective_bound / SCALE, ceiling),
        time.monotonic() - began,
        "cp-sat" if better else "baseline",
    )


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
    began = time.monotonic()
    try:
        inst = load_instance(args.instance)
    except (OSError, FormatError) as error:
        print(f"solve: cannot read input: {error}", file=sys.stderr)
        return 2

    def progress(p: Progress) -> None:
        line = {"best": p.best, "bound": p.bound, "gap": p.gap, "elapsed": p.elapsed}
        print(json.dumps(line), file=sys.stderr, flush=True)

    # The limit covers the whole run: reading, solving, writing, and the
    # interpreter starting up and importing OR-Tools before `began`.
    report = solve(
        inst,
        args.time_limit - STARTUP_AND_WRITE_SECONDS,
        on_progress=progress if args.progress else None,
        began=began,
    )
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
