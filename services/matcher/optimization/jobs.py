"""Optimized matching as queued jobs, for HR: submit, watch, read, apply.

Submitting takes a snapshot of the work as it stands (snapshot.py: open
cases, the counselors' free time on office days, the quota left, and the
bookings a re-plan may move) in the benchmark's instance format and queues
it. Every matcher replica runs a `JobRunner`
that takes queued jobs one at a time (SKIP LOCKED on PostgreSQL) and runs
`eapctl match solve` on the snapshot in a child process, so solving never
stalls the replica's gRPC calls. The child's progress lines become the
job's progress, and its heartbeat: a job whose heartbeat stops (its
replica died) is taken up again by another replica, up to three times,
then marked failed with the reason. Nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher import metrics
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.store import BookingView
from services.matcher.optimization.booked import MoveReason
from services.matcher.optimization.booked import moves as booked_moves
from services.matcher.optimization.instance import (
    CaseKind,
    Session,
    load_instance,
    load_schedule,
)
from services.matcher.optimization.report import render
from services.matcher.optimization.snapshot import JobRequest, Snapshots, monday_of
from services.matcher.orm import JobRow
from services.rules.office_time import OFFICE_ZONE, local_day
from services.runtime import clock, job_queue
from services.runtime.audit import AuditTrail
from services.runtime.errors import FailedPrecondition, NotFound, ServiceError
from services.runtime.fields import FieldChecker
from services.runtime.job_queue import HEARTBEAT, POLL_SECONDS

log = logging.getLogger("eap.matcher.jobs")

MAX_WEEKS = 8
MAX_TIME_LIMIT = 600


@dataclass(frozen=True)
class Proposed:
    case_id: str
    counselor_id: str
    start: datetime
    minutes: int
    modality: str


@dataclass(frozen=True)
class ProposedMove:
    booking_id: str
    case_id: str
    source: Proposed  # where the session is booked now
    target: Proposed  # where the job would have it: same case, same ISO week
    reason: MoveReason
    for_case_id: str  # the case taking its place, where one does


@dataclass(frozen=True)
class Result:
    job: JobRow
    sessions: list[Proposed]  # new sessions: neither booked already nor moved
    unserved: list[tuple[str, int, str, str]]  # case, missing, code, words
    crisis_sessions: int
    moves: list[ProposedMove]


@dataclass(frozen=True)
class Applied:
    booked: list[Proposed]
    refused: list[tuple[Proposed, str]]  # and the rule that refused it
    booking_ids: list[str]
    moved: list[ProposedMove]
    not_moved: list[tuple[ProposedMove, str]]


def _proposed(session: Session) -> Proposed:
    # The instance's wall-clock times are the office's (snapshot.py).
    start = session.start.replace(tzinfo=OFFICE_ZONE)
    return Proposed(session.case, session.counselor, start, session.minutes, session.modality)


def _kinds(job: JobRow) -> dict[str, str]:
    return {c["id"]: c["kind"] for c in job.instance["cases"]}


def with_what_if(instance: dict[str, Any], what_if: dict[str, int]) -> dict[str, Any]:
    changed = dict(instance)
    changed["agencies"] = [
        {**a, "budget_ntd": max(a["budget_ntd"] + what_if.get(a["id"], 0), 0)}
        for a in instance["agencies"]
    ]
    return changed


class Jobs:
    """The job use cases: submit, read, watch, result, apply."""

    def __init__(
        self,
        engine: AsyncEngine,
        snapshots: Snapshots,
        search: SlotSearch,
        bookings: BookingSaga,
        audit: AuditTrail | None = None,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._snapshots = snapshots
        self._search = search
        self._bookings = bookings
        self._audit = audit

    async def submit(self, request: JobRequest) -> JobRow:
        checker = FieldChecker()
        checker.require(1 <= request.weeks <= MAX_WEEKS, "weeks", f"1 to {MAX_WEEKS}")
        checker.require(
            0 < request.time_limit_seconds <= MAX_TIME_LIMIT,
            "time_limit_seconds",
            f"1 to {MAX_TIME_LIMIT}",
        )
        for name, weight in request.weights.items():
            checker.require(0 <= weight <= 1_000_000, f"weights.{name}", "0 to 1000000")
        for n, case_id in enumerate(request.case_ids):
            checker.identifier(case_id, f"case_ids[{n}]")
        checker.require(len(request.case_ids) <= 5000, "case_ids", "at most 5000")
        start = monday_of(request.horizon_start)
        weeks = min(max(request.weeks, 1), MAX_WEEKS)  # out of range: refused just above
        last = local_day(start + timedelta(weeks=weeks) - timedelta(days=1))
        checker.require(
            last.year == start.year, "weeks", "the horizon must lie inside one fiscal year"
        )
        for agency_id in request.what_if:
            checker.identifier(agency_id, "what_if.agency_id")
        checker.require(0 <= request.move_cost <= 1_000_000, "move_cost", "0 to 1000000")
        checker.raise_if_any()
        instance = await self._snapshots.build(request)
        unchanged = None
        if request.what_if:
            unchanged, instance = instance, with_what_if(instance, request.what_if)
        load_instance(instance)  # a snapshot the solver cannot read is our bug: fail here
        row = JobRow(
            job_id=uuid.uuid4().hex,
            state="queued",
            time_limit_seconds=request.time_limit_seconds,
            instance=instance,
            unchanged=unchanged,
            result=None,
            sessions_without_what_if=0,
            best_score=0.0,
            bound=0.0,
            elapsed_seconds=0.0,
            attempts=0,
            error="",
            worker="",
            heartbeat_at=None,
            applied=False,
            created_at=clock.now(),
        )
        async with self._sessions() as session, session.begin():
            session.add(row)
        log.info("match job queued", extra={"job": row.job_id, "cases": len(instance["cases"])})
        return row

    async def get(self, job_id: str) -> JobRow:
        async with self._sessions() as session:
            row = await session.get(JobRow, job_id)
        if row is None:
            raise NotFound("job_id names no match job")
        return row

    async def watch(self, job_id: str) -> AsyncIterator[JobRow]:
        """The job now, then each time it changes, until it ends."""
        seen: tuple[object, ...] | None = None
        while True:
            row = await self.get(job_id)
            state = (row.state, row.best_score, row.bound, round(row.elapsed_seconds, 1))
            if state != seen:
                seen = state
                yield row
            if row.state in ("done", "failed"):
                return
            await asyncio.sleep(POLL_SECONDS)

    async def result(self, job_id: str) -> Result:
        row = await self.get(job_id)
        if row.state != "done" or row.result is None:
            raise FailedPrecondition(
                "JOB_NOT_DONE", "job", f"the job is {row.state}; its result is not ready"
            )
        if self._audit:
            await self._audit.record("read", f"match-job/{job_id}")
        inst = load_instance(row.instance)
        schedule = load_schedule(row.result, inst)
        planned = booked_moves(inst, schedule.sessions)
        places = {(b.case, b.counselor, b.start) for b in inst.booked}
        targets = {(m.to.case, m.to.counselor, m.to.start) for m in planned if m.to is not None}
        sessions = [
            _proposed(s)
            for s in schedule.sessions
            if (s.case, s.counselor, s.start) not in places | targets
        ]
        moves = [
            ProposedMove(
                m.booked.booking,
                m.booked.case,
                _proposed(
                    Session(
                        m.booked.case,
                        m.booked.counselor,
                        m.booked.start,
                        m.to.minutes,
                        m.booked.modality,
                    )
                ),
                _proposed(m.to),
                m.reason,
                m.for_case,
            )
            for m in planned
            if m.to is not None  # a lost week breaks rule 8: the solver never hands one out
        ]
        unserved = [(u.case, u.missing, u.code, u.reason) for u in schedule.unserved]
        crisis = sum(1 for s in sessions if inst.case_by_id[s.case_id].kind is CaseKind.CRISIS)
        return Result(row, sessions, unserved, crisis, sorted(moves, key=lambda m: m.source.start))

    async def report(self, job_id: str) -> str:
        """The done job's result as a self-contained HTML report."""
        result = await self.result(job_id)
        inst = load_instance(result.job.instance)
        return render(inst, load_schedule(result.job.result or {}, inst))

    async def apply(self, job_id: str, dry_run: bool) -> Applied:
        """Makes the result's moves, then books its new sessions, crisis
        cases first, each under the live rules; says what was done, what
        was refused and why. A move is the booking's own reschedule (a hold
        of the new place replacing it, then the saga's atomic move): it
        moves whole or stays as it was, so nobody loses their session."""
        result = await self.result(job_id)
        if result.job.applied:
            raise FailedPrecondition("JOB_APPLIED", "job", "this result was applied already")
        moved, not_moved = await self._move(result.moves, dry_run)
        gone = {m.booking_id for m in moved}
        kinds = _kinds(result.job)
        order = sorted(
            result.sessions, key=lambda s: (kinds.get(s.case_id) != "crisis", s.start, s.case_id)
        )
        booked: list[Proposed] = []
        refused: list[tuple[Proposed, str]] = []
        ids: list[str] = []
        for proposed in order:
            try:
                if dry_run:
                    await self._search.check(
                        proposed.case_id, proposed.counselor_id, proposed.start, gone
                    )
                else:
                    held = await self._search.hold(
                        proposed.case_id, proposed.counselor_id, proposed.start
                    )
                    view: BookingView = await self._bookings.confirm(held.booking_id)
                    ids.append(view.booking_id)
                booked.append(proposed)
            except FailedPrecondition as refusal:
                refused.append((proposed, refusal.rule))
            except NotFound:
                refused.append((proposed, "NOT_FOUND"))
        if not dry_run:
            async with self._sessions() as session, session.begin():
                row = await session.get(JobRow, job_id, with_for_update=True)
                assert row is not None
                row.applied = True
        return Applied(booked, refused, ids, moved, not_moved)

    async def _move(
        self, moves: Sequence[ProposedMove], dry_run: bool
    ) -> tuple[list[ProposedMove], list[tuple[ProposedMove, str]]]:
        """The moves, in passes: one whose new place another booked session
        still holds waits for that one to move first, and what no pass can
        make is refused with the rule that refused it last."""
        done: list[ProposedMove] = []
        waiting = list(moves)
        last: dict[str, str] = {}
        while waiting:
            still: list[ProposedMove] = []
            for move in waiting:
                target = move.target
                gone = {move.booking_id, *(m.booking_id for m in done)}
                try:
                    if dry_run:
                        await self._search.check(
                            move.case_id, target.counselor_id, target.start, gone
                        )
                    else:
                        held = await self._search.hold(
                            move.case_id,
                            target.counselor_id,
                            target.start,
                            replaces=move.booking_id,
                        )
                        await self._bookings.reschedule(move.booking_id, held.booking_id)
                    done.append(move)
                except FailedPrecondition as refusal:
                    last[move.booking_id] = refusal.rule
                    still.append(move)
                except NotFound:
                    last[move.booking_id] = "NOT_FOUND"
                    still.append(move)
            if len(still) == len(waiting):
                break  # no pass will do better
            waiting = still
        return done, [(m, last[m.booking_id]) for m in waiting]


def _observe(schedule: dict[str, Any]) -> None:
    """A finished job's solve, as metrics: duration, gap, whether it ran
    out of time, and why cases went unserved."""
    solver = schedule.get("solver", {})
    metrics.MATCH_JOBS.labels("done").inc()
    metrics.SOLVE_SECONDS.observe(float(solver.get("wall_seconds") or 0.0))
    score, bound = float(solver.get("objective") or 0.0), solver.get("bound")
    if bound is not None and score > 0:
        metrics.SOLVE_GAP.observe(max(float(bound) - score, 0.0) / score)
    if solver.get("status") != "OPTIMAL":
        metrics.HIT_TIME_LIMIT.inc()
    for unserved in schedule.get("unserved", []):
        metrics.UNSERVED.labels(unserved.get("code") or "UNKNOWN").inc()


class JobRunner:
    """Takes queued jobs, one at a time, and solves them in a child process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.worker = uuid.uuid4().hex[:12]

    async def run_forever(self) -> None:
        await job_queue.run_forever(self.run_one, "match job")

    async def run_one(self) -> bool:
        """Claims one job and runs it; False when there was none."""
        job = await self._claim()
        if job is None:
            return False
        try:
            if job.unchanged is not None:
                half = max(job.time_limit_seconds // 2, 1)
                unchanged = await self._solve(job, job.unchanged, half, report=False)
                await self._update(job.job_id, sessions_without_what_if=len(unchanged["sessions"]))
                schedule = await self._solve(job, job.instance, half, report=True)
            else:
                schedule = await self._solve(job, job.instance, job.time_limit_seconds, report=True)
        except (ServiceError, OSError, RuntimeError, ValueError) as error:
            log.warning(
                "match job failed", extra={"job": job.job_id, "error": type(error).__name__}
            )
            await self._update(job.job_id, state="failed", error=str(error)[:500])
            metrics.MATCH_JOBS.labels("failed").inc()
            return True
        solver = schedule.get("solver", {})
        await self._update(
            job.job_id,
            state="done",
            result=schedule,
            best_score=float(solver.get("objective") or 0.0),
            bound=float(solver.get("bound") or 0.0),
            elapsed_seconds=float(solver.get("wall_seconds") or 0.0),
        )
        _observe(schedule)
        log.info("match job done", extra={"job": job.job_id})
        return True

    async def _claim(self) -> JobRow | None:
        async with self._sessions() as session, session.begin():
            return await job_queue.claim(session, JobRow, self.worker)

    async def _solve(
        self, job: JobRow, instance: dict[str, Any], seconds: int, report: bool
    ) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="eap-job-") as tmp:
            given, answer = Path(tmp) / "instance.json", Path(tmp) / "schedule.json"
            given.write_text(json.dumps(instance))
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.matcher.optimization.solver",
                str(given),
                "--time-limit",
                str(seconds),
                "-o",
                str(answer),
                "--progress",
                stderr=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
            )
            assert child.stderr is not None
            beating = asyncio.create_task(self._beat(job.job_id))
            try:
                async for raw in child.stderr:
                    try:
                        progress = json.loads(raw)
                    except ValueError:
                        continue  # not a progress line (a warning from a library)
                    if report:
                        await self._update(
                            job.job_id,
                            best_score=progress["best"],
                            bound=progress["bound"],
                            elapsed_seconds=progress["elapsed"],
                        )
                code = await child.wait()
            finally:
                beating.cancel()
                if child.returncode is None:
                    child.kill()
                    await child.wait()
            if code != 0:
                raise RuntimeError(f"the solver exited with {code}")
            schedule: dict[str, Any] = json.loads(answer.read_text())
            return schedule

    async def _beat(self, job_id: str) -> None:
        """Keeps the job's heartbeat going while the solver is quiet."""
        while True:
            await asyncio.sleep(HEARTBEAT.total_seconds())
            await self._update(job_id)

    async def _update(self, job_id: str, **changes: Any) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.worker != self.worker:
                return  # another replica took it over
            for name, value in changes.items():
                setattr(row, name, value)
            row.heartbeat_at = clock.now()
