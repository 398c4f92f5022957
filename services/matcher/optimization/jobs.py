"""Optimized matching as queued jobs, for HR: submit, watch, read, apply.

Submitting takes a snapshot of the work as it stands (open cases, the
counselors' free time on office days, the quota left) in the benchmark's
instance format and queues it. Every matcher replica runs a `JobRunner`
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
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher import metrics
from services.matcher.booking import slots
from services.matcher.booking.cases import Case
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.store import BookingView, case_of, live
from services.matcher.calendar_port import CalendarPort
from services.matcher.optimization.instance import (
    INSTANCE_FORMAT,
    SEED_RULES,
    SEED_WEIGHTS,
    TIME_FORMAT,
    CaseKind,
    load_instance,
    load_schedule,
)
from services.matcher.optimization.report import render
from services.matcher.orm import BookingRow, CaseRow, CounselorRow, JobRow
from services.matcher.quota_port import QuotaPort
from services.matcher.registry.store import counselor_of
from services.rules.office_time import OFFICE_ZONE, OFFICE_ZONE_NAME, iso_week, local_day
from services.rules.sessions import SLOT_MINUTES
from services.runtime import clock, job_queue
from services.runtime.audit import AuditTrail
from services.runtime.errors import FailedPrecondition, NotFound, ServiceError
from services.runtime.fields import FieldChecker
from services.runtime.job_queue import HEARTBEAT, POLL_SECONDS

log = logging.getLogger("eap.matcher.jobs")

MAX_WEEKS = 8
MAX_TIME_LIMIT = 600


@dataclass(frozen=True)
class JobRequest:
    horizon_start: datetime
    weeks: int
    case_ids: Sequence[str]
    time_limit_seconds: int
    weights: dict[str, float]
    what_if: dict[str, int]  # agency id -> extra NT$


@dataclass(frozen=True)
class Proposed:
    case_id: str
    counselor_id: str
    start: datetime
    minutes: int
    modality: str


@dataclass(frozen=True)
class Result:
    job: JobRow
    sessions: list[Proposed]
    unserved: list[tuple[str, int, str, str]]  # case, missing, code, words
    crisis_sessions: int


def _local(moment: datetime) -> str:
    return moment.astimezone(OFFICE_ZONE).strftime(TIME_FORMAT)


def _monday(moment: datetime) -> datetime:
    day = local_day(moment)
    monday = day - timedelta(days=day.weekday())
    return datetime.combine(monday, datetime.min.time(), OFFICE_ZONE)


class Snapshots:
    """Builds a job's instance from the live registry, cases and quota."""

    def __init__(
        self, engine: AsyncEngine, quota: QuotaPort, calendars: CalendarPort, deadline_hours: int
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._quota = quota
        self._calendars = calendars
        self._deadline_hours = deadline_hours

    async def build(self, request: JobRequest) -> dict[str, Any]:
        start = _monday(request.horizon_start)
        end = start + timedelta(weeks=request.weeks)
        year = start.year
        now = clock.now()
        async with self._sessions() as session:
            query = select(CaseRow).order_by(CaseRow.case_id)
            if request.case_ids:
                query = query.where(CaseRow.case_id.in_(list(request.case_ids)))
            cases = [case_of(row) for row in await session.scalars(query)]
            missing = set(request.case_ids) - {c.case_id for c in cases}
            if missing:
                raise NotFound(f"{len(missing)} of case_ids name no case")
            cases = [c for c in cases if c.withdrawn_at is None]  # no longer matched
            counselors = [
                counselor_of(row)
                for row in await session.scalars(select(CounselorRow).order_by("counselor_id"))
            ]
            booked = list(
                await session.scalars(
                    select(BookingRow).where(
                        live(now),
                        or_(
                            and_(BookingRow.start < end, BookingRow.end > start),
                            BookingRow.case_id.in_([c.case_id for c in cases]),
                        ),
                    )
                )
            )
        per_case = Counter(b.case_id for b in booked)
        employee_weeks = {(b.employee_id, iso_week(b.start)) for b in booked}
        busy: dict[str, list[tuple[datetime, datetime]]] = {}
        for b in booked:
            busy.setdefault(b.counselor_id, []).append((b.start, b.end))

        providers: list[dict[str, Any]] = []
        contracted = set()
        for provider_id in sorted({k.provider_id for k in counselors}):
            contract = await self._quota.contract(provider_id, year)
            if contract is None:
                continue  # no contract this year: its counselors cannot be booked
            rate, left_minutes = contract
            contracted.add(provider_id)
            providers.append(
                {"id": provider_id, "hourly_rate_ntd": rate, "hours_cap": left_minutes / 60}
            )
        counselor_items = []
        for k in counselors:
            if k.provider_id not in contracted:
                continue
            first, last = local_day(start), local_day(end - timedelta(days=1))
            windows = slots.counselor_windows(k, first, last, self._calendars.current)
            free = slots.without(windows, busy.get(k.counselor_id, []))
            counselor_items.append(
                {
                    "id": k.counselor_id,
                    "provider": k.provider_id,
                    "specialties": [s.value for s in k.specialties],
                    "modalities": [m.value for m in k.modalities],
                    "max_sessions_per_day": k.max_sessions_per_day,
                    "availability": [[_local(a), _local(b)] for a, b in free if a < b],
                }
            )

        bookable = {str(item["id"]) for item in counselor_items}
        entitlement: dict[str, float] = {}
        case_items = []
        for case in cases:
            wanted = case.sessions_wanted - per_case[case.case_id]
            if wanted <= 0:
                continue
            if case.employee_id not in entitlement:
                left = await self._quota.left(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)
                # An account not opened yet gets its policy's entitlement on
                # the first booking; the quota service checks it then.
                entitlement[case.employee_id] = (
                    left / 60 if left is not None else case.sessions_wanted * case.minutes / 60
                )
            ranges = []
            for r in case.availability:
                lo, hi = max(r.start, start), min(r.end, end)
                if lo < hi and (case.employee_id, iso_week(lo)) not in employee_weeks:
                    ranges.append([_local(lo), _local(hi)])
            case_items.append(
                _case_item(case, wanted, ranges, entitlement[case.employee_id], bookable)
            )

        agencies = []
        for agency_id in sorted({c.agency_id for c in cases}):
            left = await self._quota.left(qpb.ACCOUNT_KIND_AGENCY, agency_id, year)
            agencies.append({"id": agency_id, "budget_ntd": max(left or 0, 0)})
        return {
            "format": INSTANCE_FORMAT,
            "name": f"match-{_local(start)[:10]}-w{request.weeks}",
            "timezone": OFFICE_ZONE_NAME,
            "horizon": {"start": _local(start)[:10], "weeks": request.weeks},
            "slot_minutes": SLOT_MINUTES,
            "rules": {**SEED_RULES, "crisis_deadline_hours": self._deadline_hours},
            "weights": {**SEED_WEIGHTS, **request.weights},
            "providers": providers,
            "counselors": counselor_items,
            "agencies": agencies,
            "cases": case_items,
        }


def _case_item(
    case: Case, wanted: int, ranges: list[list[str]], hours: float, counselors: set[str]
) -> dict[str, Any]:
    """The case as the solver reads it. A preferred or excluded counselor not
    among `counselors` (unknown, or no contract this year) cannot be booked
    anyway, and the solver refuses references to counselors it lacks."""
    preferred = case.preferred_counselor_id
    return {
        "id": case.case_id,
        "employee": case.employee_id,
        "agency": case.agency_id,
        "category": case.category.value,
        "kind": case.kind.value,
        "sessions": wanted,
        "minutes": case.minutes,
        "modalities": [m.value for m in case.modalities],
        "submitted": _local(case.submitted_at),
        "availability": ranges,
        "preferred_counselor": preferred if preferred in counselors else None,
        "excluded_counselors": [c for c in case.excluded_counselor_ids if c in counselors],
        "employee_remaining_hours": max(hours, 0),
    }


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
        start = _monday(request.horizon_start)
        weeks = min(max(request.weeks, 1), MAX_WEEKS)  # out of range: refused just above
        last = local_day(start + timedelta(weeks=weeks) - timedelta(days=1))
        checker.require(
            last.year == start.year, "weeks", "the horizon must lie inside one fiscal year"
        )
        for agency_id in request.what_if:
            checker.identifier(agency_id, "what_if.agency_id")
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
        kinds = _kinds(row)
        schedule: dict[str, Any] = row.result
        sessions = [
            Proposed(
                s["case"],
                s["counselor"],
                datetime.fromisoformat(s["start"]).replace(tzinfo=OFFICE_ZONE),
                s["minutes"],
                s["modality"],
            )
            for s in schedule["sessions"]
        ]
        unserved = [
            (u["case"], u["missing"], u.get("code", ""), u["reason"]) for u in schedule["unserved"]
        ]
        crisis = sum(1 for s in sessions if kinds.get(s.case_id) == CaseKind.CRISIS.value)
        return Result(row, sessions, unserved, crisis)

    async def report(self, job_id: str) -> str:
        """The done job's result as a self-contained HTML report."""
        result = await self.result(job_id)
        inst = load_instance(result.job.instance)
        return render(inst, load_schedule(result.job.result or {}, inst))

    async def apply(
        self, job_id: str, dry_run: bool
    ) -> tuple[list[Proposed], list[tuple[Proposed, str]], list[str]]:
        """Books the result's sessions, crisis cases first, each under the
        live rules; returns what was booked, what was refused and why, and
        the booking ids."""
        result = await self.result(job_id)
        if result.job.applied:
            raise FailedPrecondition("JOB_APPLIED", "job", "this result was applied already")
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
                        proposed.case_id, proposed.counselor_id, proposed.start
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
        return booked, refused, ids


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
