"""Optimized matching of cases to counselor slots with OR-Tools CP-SAT.

    python -m services.matcher.optimization.solver INSTANCE.json [--time-limit S] [-o SCHEDULE.json]

The model (`model.build_model`) has one boolean per candidate session
(case, counselor, start), and the best first-come-first-served schedule
as CP-SAT's hint. The schedule returned is the better, by our verifier's
exact score, of the solver's and the baseline's: never worse than
first-come-first-served.

Small instances are one model with every start the rules allow, solved
with a worker on CP-SAT's strongest linear relaxation (plus energy cuts
per availability window): its bound and its OPTIMAL are the instance's.
Larger ones go by large-neighbourhood search from the baseline (`lns`),
whose rounds see only the earliest few free starts per case, counselor
and day.

The bound reported is one that holds for the instance, never for a
pruned model: the least of the linear relaxation over every start
(`bound`, computed beside the search in the same time limit), the
per-case ceiling (`verify.score_upper_bound`) and, for a model with every
start, CP-SAT's own. The status is OPTIMAL only when the schedule meets it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from ortools.sat.python import cp_model

from services.matcher.optimization import booked, greedy, lns, reasons
from services.matcher.optimization.bound import Bound, relaxation_bound
from services.matcher.optimization.instance import (
    FormatError,
    Instance,
    Schedule,
    Session,
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
from services.runtime import i18n
from services.runtime.i18n import N_, tr

# Up to this many cases, one model of the whole instance; beyond, neighbourhoods.
WHOLE_MODEL_CASES = 150
WHOLE_MODEL_STARTS = 40_000  # every start in the whole model up to this many candidates
WHOLE_MODEL_FINISH_SECONDS = 0.2
PRUNED_SHARE = 0.6  # of a small instance's time, the first model's (earliest starts only)
BOUND_CASES = 1000  # the relaxation's bound up to this many cases (beyond: the ceiling)
BOUND_SHARE = 0.6  # of the time limit, the most the relaxation may take
OPTIMAL_TOLERANCE = 1e-6  # relative: a schedule this close to its bound has met it
EXPLAIN_SECONDS_PER_CASE = 0.0006
MORE_STARTS_UP_TO = 1000  # cases; beyond, two greedy starts (seconds each on L)
STARTUP_AND_WRITE_SECONDS = 1.2  # of `match solve`'s limit: 0.8 s start-up, writing, margin

__all__ = ["Progress", "ProgressSink", "SolveReport", "main", "solve"]


@dataclass(frozen=True)
class SolveReport:
    schedule: Schedule
    status: str
    objective: float
    bound: float | None  # holds for the instance (see the module's text); None if none
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
    ceiling = float(score_upper_bound(inst))
    bounding = _Bounding(inst, time_limit * BOUND_SHARE, ceiling)
    baseline, start_score = _best_start(inst)
    sink = on_progress or (lambda progress: None)
    sink(Progress(float(start_score), bounding.value(), time.monotonic() - began))
    if len(inst.cases) <= WHOLE_MODEL_CASES:
        report = _solve_whole(inst, baseline, began, time_limit, workers, bounding, sink)
    else:
        # Leave time to explain the unserved at the end (about 0.6 ms a case).
        deadline = began + time_limit - EXPLAIN_SECONDS_PER_CASE * len(inst.cases)

        def progress(score: float) -> None:
            sink(Progress(score, bounding.value(), time.monotonic() - began))

        outcome = lns.search(inst, baseline, deadline, workers, seed, progress)
        report = SolveReport(
            outcome.schedule,
            f"{outcome.improved} of {outcome.rounds} neighbourhoods improved",
            outcome.score,
            None,
            0.0,
            "cp-sat-lns" if outcome.schedule is not baseline else "baseline",
        )
    if inst.booked:
        report = _moves_that_pay(inst, report)
    # The relaxation had its share of the limit: what it has by now is its answer.
    bound = bounding.value(wait=max(began + time_limit - time.monotonic(), 0.0))
    if report.bound is not None:
        bound = min(bound, report.bound)
    status = report.status
    if report.objective >= bound - OPTIMAL_TOLERANCE * max(abs(bound), 1.0):
        status = "OPTIMAL"
    elif status == "OPTIMAL":
        status = "FEASIBLE"  # optimal for a model that could not see every start
    # Why each case is left short, worked out once, for the schedule handed out.
    explained = replace(report.schedule, unserved=reasons.unserved(inst, report.schedule.sessions))
    return replace(
        report,
        schedule=explained,
        status=status,
        bound=bound,
        seconds=time.monotonic() - began,
    )


def _moves_that_pay(inst: Instance, report: SolveReport) -> SolveReport:
    """The schedule without the moves of booked sessions that buy nothing."""

    def score(sessions: Sequence[Session]) -> Fraction | None:
        violations, found = violations_and_score(inst, schedule_of(inst, sessions))
        return None if violations else found

    kept = booked.undo_needless(inst, report.schedule.sessions, score)
    if kept == list(report.schedule.sessions):
        return report
    schedule = schedule_of(inst, kept)
    return replace(
        report, schedule=schedule, objective=float(violations_and_score(inst, schedule)[1])
    )


class _Bounding:
    """The relaxation's bound, worked out in a thread beside the search
    (GLOP lets go of the interpreter while it solves); until it is done,
    and where the instance is too large for it, the per-case ceiling."""

    def __init__(self, inst: Instance, seconds: float, ceiling: float) -> None:
        self._ceiling = ceiling
        self._found: Bound | None = None
        self._thread: threading.Thread | None = None
        if len(inst.cases) <= BOUND_CASES:
            self._thread = threading.Thread(
                target=self._run, args=(inst, seconds), name="relaxation-bound", daemon=True
            )
            self._thread.start()

    def _run(self, inst: Instance, seconds: float) -> None:
        self._found = relaxation_bound(inst, seconds)

    def value(self, wait: float = 0.0) -> float:
        """The best bound known, after waiting up to `wait` seconds for
        the relaxation."""
        if self._thread is not None and wait > 0:
            self._thread.join(wait)
        found = self._found
        return self._ceiling if found is None else min(found.value, self._ceiling)


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
    """Passes each solution CP-SAT finds on as progress; CP-SAT's own bound
    only where its model has every start."""

    def __init__(
        self, began: float, bounding: _Bounding, sink: ProgressSink, complete: bool
    ) -> None:
        super().__init__()
        self._began, self._bounding, self._sink = began, bounding, sink
        self._complete = complete

    def on_solution_callback(self) -> None:
        bound = self._bounding.value()
        if self._complete:
            bound = min(bound, self.best_objective_bound / SCALE)
        self._sink(Progress(self.objective_value / SCALE, bound, time.monotonic() - self._began))


def _solve_whole(
    inst: Instance,
    baseline: Schedule,
    began: float,
    time_limit: float,
    workers: int,
    bounding: _Bounding,
    sink: ProgressSink,
) -> SolveReport:
    """Two models of the whole instance: the earliest few starts first
    (CP-SAT finds good schedules in it fast), then every start, from the
    first's best, to prove or improve it; a model of every start is built
    only where it is small enough to search."""
    nothing = Load(inst, Costs(inst))
    every = [c for case in inst.cases for c in CandidatePool(inst, None).free(case, nothing)]
    complete = len(every) <= WHOLE_MODEL_STARTS
    pool = CandidatePool(inst)
    pruned = [cand for case in inst.cases for cand in pool.free(case, nothing)]
    best = baseline
    name, bound = "UNKNOWN", None
    phases = (
        [(pruned, PRUNED_SHARE, False), (every, 1.0, True)] if complete else [(pruned, 1.0, False)]
    )
    for cands, share, last in phases:
        built = build_model(inst, with_sessions(inst, cands, best.sessions), nothing)
        hint(inst, built, best.sessions)
        # Kept for last: verifying and explaining what is handed out.
        left = time_limit - (time.monotonic() - began) - WHOLE_MODEL_FINISH_SECONDS
        solver = cp_solver(max(left * share, 0.1), workers, prove=True)
        status = solver.solve(built.model, _Reporter(began, bounding, sink, last))
        name = solver.status_name(status)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            continue
        if last:
            bound = solver.best_objective_bound / SCALE
        found = schedule_of(inst, chosen_sessions(built, solver))
        ours = verify(inst, found)
        if not ours.violations and ours.score >= verify(inst, best).score:
            best = found
    # The score of the schedule handed out, as the verifier reckons it: when
    # the baseline is handed out, CP-SAT's objective describes a schedule
    # nobody receives.
    return SolveReport(
        best,
        name,
        float(verify(inst, best).score),
        bound,
        time.monotonic() - began,
        "cp-sat" if best is not baseline else "baseline",
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
    i18n.add_language_option(parser)
    args = parser.parse_args(argv)
    began = time.monotonic()
    i18n.choose_cli_language(args.lang)
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
    print(_achieved(inst, report, time.monotonic() - began), file=sys.stderr)
    return 0


PROVEN = N_("Proven optimal")
FOUND = N_("The best schedule found in the time")


def _achieved(inst: Instance, report: SolveReport, seconds: float) -> str:
    """What the run achieved, for the person who ran it (stderr: stdout may
    be the schedule)."""
    verdict = verify(inst, report.schedule)
    words = PROVEN if report.status == "OPTIMAL" else FOUND
    gap = (
        ""
        if report.bound is None
        else tr(
            ", within {gap} of the bound {bound}",
            gap=f"{_gap(report):.2%}",
            bound=f"{report.bound:,.2f}",
        )
    )
    return tr(
        "{status}: score {score}{gap}; {sessions} sessions ({crisis} for crisis cases), "
        "{served} of {cases} cases served; {seconds} s",
        status=tr(words),
        score=f"{report.objective:,.2f}",
        gap=gap,
        sessions=verdict.sessions,
        crisis=verdict.crisis_sessions,
        served=verdict.cases_served,
        cases=verdict.cases,
        seconds=f"{seconds:.1f}",
    )


def _gap(report: SolveReport) -> float:
    assert report.bound is not None
    return max(report.bound - report.objective, 0.0) / max(abs(report.objective), 1.0)


if __name__ == "__main__":
    sys.exit(main())
