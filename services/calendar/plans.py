"""Plans kept in the calendar service's database: submitted as jobs, planned
by whichever replica claims them, read back, exported, and used to find
meeting times and to enroll people in trainings.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.calendar.ics import export_ics
from services.calendar.meeting_time import (
    MAX_WINDOW_DAYS,
    MeetingOption,
    find_meeting_times,
)
from services.calendar.office_days import OfficeDays
from services.calendar.orm import EnrollmentRow, EventRow, PlanRow
from services.calendar.planner import Event, Plan, Unplaced, plan_program
from services.calendar.program import Kind, Person, Program, Span
from services.calendar.program_file import DEFAULT_OFFICE_HOURS, ProgramFileError, parse_program
from services.runtime import clock, job_queue
from services.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.calendar")

TIMEZONE = ZoneInfo("Asia/Taipei")
MAX_PROGRAM_BYTES = 2_000_000
DEFAULT_TIME_LIMIT = 20
MAX_TIME_LIMIT = 300


@dataclass(frozen=True)
class StoredPlan:
    row: PlanRow
    events: list[EventRow]
    enrolled: dict[str, int]  # by event uid
    waitlisted: dict[str, int]


def read_program(text: str, year: int = 0) -> Program:
    """The programme file, or INVALID_ARGUMENT naming each mistake's key
    and line."""
    if len(text.encode()) > MAX_PROGRAM_BYTES:
        raise InvalidArgument.single("program_toml", "at most 2 MB")
    try:
        program = parse_program(text)
    except ProgramFileError as error:
        raise InvalidArgument(
            [
                FieldViolation(
                    f"program_toml: {m.key}",
                    f"line {m.line}: {m.message}" if m.line else m.message,
                )
                for m in error.mistakes
            ]
        ) from None
    return replace(program, year=year) if year else program


class Plans:
    def __init__(self, engine: AsyncEngine, office_days: OfficeDays) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._office_days = office_days

    async def submit(self, text: str, year: int, time_limit: int) -> str:
        checker = FieldChecker()
        checker.require(year == 0 or 2000 <= year <= 2200, "year", "0, or 2000 to 2200")
        checker.require(0 <= time_limit <= MAX_TIME_LIMIT, "time_limit_seconds", "0 (20 s) to 300")
        checker.raise_if_any()
        program = read_program(text, year)
        plan_id = uuid.uuid4().hex
        async with self._sessions() as session, session.begin():
            session.add(
                PlanRow(
                    plan_id=plan_id,
                    state="queued",
                    name=program.name[:200],
                    year=program.year,
                    program_toml=text,
                    time_limit_seconds=time_limit or DEFAULT_TIME_LIMIT,
                    unplaced=[],
                    solver_status="",
                    seconds=0.0,
                    attempts=0,
                    error="",
                    worker="",
                    created_at=clock.now(),
                )
            )
        log.info("plan queued", extra={"plan": plan_id})
        return plan_id

    async def get(self, plan_id: str) -> StoredPlan:
        async with self._sessions() as session:
            row = await session.get(PlanRow, plan_id)
            if row is None:
                raise NotFound(f"no plan {plan_id!r}")
            events = list(
                (
                    await session.scalars(
                        select(EventRow).where(EventRow.plan_id == plan_id).order_by(EventRow.start)
                    )
                ).all()
            )
            counts = (
                await session.execute(
                    select(EnrollmentRow.event_uid, EnrollmentRow.state, func.count())
                    .where(EnrollmentRow.plan_id == plan_id)
                    .group_by(EnrollmentRow.event_uid, EnrollmentRow.state)
                )
            ).all()
        enrolled = {uid: n for uid, state, n in counts if state == "enrolled"}
        waitlisted = {uid: n for uid, state, n in counts if state == "waitlisted"}
        return StoredPlan(row, events, enrolled, waitlisted)

    async def _done(self, plan_id: str) -> tuple[Program, Plan]:
        stored = await self.get(plan_id)
        if stored.row.state != "done":
            raise FailedPrecondition(
                "PLAN_NOT_DONE", f"plan/{plan_id}", f"the plan is {stored.row.state}, not done yet"
            )
        program = read_program(stored.row.program_toml, stored.row.year)
        events = tuple(_event(e) for e in stored.events)
        unplaced = tuple(Unplaced(**u) for u in stored.row.unplaced)
        plan = Plan(program, events, unplaced, stored.row.solver_status, stored.row.seconds)
        return program, plan

    async def export(self, plan_id: str, person: str, room: str) -> tuple[bytes, int]:
        _, plan = await self._done(plan_id)
        if person and all(person not in (*e.required, *e.optional_free) for e in plan.events):
            known = {p.id for p in plan.program.people}
            if person not in known:
                raise NotFound(f"no person {person!r} in the plan's programme")
        if room and room not in {r.id for r in plan.program.rooms}:
            raise NotFound(f"no room {room!r} in the plan's programme")
        ics = export_ics(plan, person=person or None, room=room or None)
        count = ics.count(b"BEGIN:VEVENT")
        return ics, count

    async def find_time(
        self,
        plan_id: str,
        required: list[tuple[str, list[Span]]],
        optional: list[tuple[str, list[Span]]],
        minutes: int,
        first_text: str,
        last_text: str,
        limit: int,
    ) -> list[MeetingOption]:
        checker = FieldChecker()
        checker.require(1 <= len(required) <= 200, "required", "1 to 200 attendees")
        checker.require(len(optional) <= 2000, "optional", "at most 2,000 attendees")
        checker.require(15 <= minutes <= 480, "duration_minutes", "15 to 480 minutes")
        checker.require(0 <= limit <= 100, "limit", "0 (10) to 100")
        first = _date(checker, first_text, "first_date")
        last = _date(checker, last_text, "last_date")
        if first and last:
            checker.require(first <= last, "last_date", "on or after first_date")
            checker.require(
                (last - first).days < MAX_WINDOW_DAYS, "last_date", "within 366 days of first_date"
            )
        for field, group in (("required", required), ("optional", optional)):
            for n, (person_id, busy) in enumerate(group):
                checker.identifier(person_id, f"{field}[{n}].person_id")
                checker.require(len(busy) <= 500, f"{field}[{n}].busy", "at most 500 spans")
                for k, span in enumerate(busy):
                    checker.require(
                        span.start < span.end, f"{field}[{n}].busy[{k}]", "end after start"
                    )
        checker.raise_if_any()
        assert first is not None and last is not None
        known: dict[str, Person] = {}
        hours = None
        slot = 30
        if plan_id:
            program, plan = await self._done(plan_id)
            known = {p.id: p for p in program.people}
            hours, slot = program.office_hours, program.slot_minutes
            # The plan's own events keep their required attendees busy.
            taken: dict[str, list[Span]] = {}
            for event in plan.events:
                for person_id in event.required:
                    taken.setdefault(person_id, []).append(Span(event.start, event.end))
            known = {
                pid: replace(p, busy=p.busy + tuple(taken.get(pid, ()))) for pid, p in known.items()
            }
        hours = hours or DEFAULT_OFFICE_HOURS

        def person(person_id: str, busy: list[Span]) -> Person:
            base = known.get(person_id, Person(person_id))
            return replace(base, busy=base.busy + tuple(busy))

        calendar = await self._office_days.calendar(first, last)
        return find_meeting_times(
            [person(p, b) for p, b in required],
            [person(p, b) for p, b in optional],
            minutes,
            first,
            last,
            calendar,
            hours,
            slot,
            limit or 10,
        )

    # --- enrollment ---------------------------------------------------------

    async def enroll(self, plan_id: str, uid: str, person_id: str) -> tuple[str, int]:
        """The person's state at the event ("enrolled" or "waitlisted") and,
        waitlisted, their place in line."""
        _check_enrollment(plan_id, uid, person_id)
        async with self._sessions() as session, session.begin():
            event = await _locked_event(session, plan_id, uid)
            if event.kind not in (Kind.TRAINING.value, Kind.GROUP.value) or event.capacity <= 0:
                raise FailedPrecondition(
                    "NOT_ENROLLABLE", f"event/{uid}", "this event takes no enrollments"
                )
            if event.audience and person_id not in event.audience:
                raise FailedPrecondition(
                    "NOT_IN_AUDIENCE", f"event/{uid}", "this training is for another audience"
                )
            rows = await _enrollments(session, plan_id, uid)
            mine = next((r for r in rows if r.person_id == person_id), None)
            if mine is not None and mine.state != "cancelled":
                return mine.state, _place(rows, mine)
            seated = sum(r.state == "enrolled" for r in rows)
            state = "enrolled" if seated < event.capacity else "waitlisted"
            sequence = max((r.sequence for r in rows), default=0) + 1
            if mine is None:
                mine = EnrollmentRow(plan_id=plan_id, event_uid=uid, person_id=person_id)
                session.add(mine)
                rows.append(mine)
            mine.state, mine.sequence, mine.requested_at = state, sequence, clock.now()
            return state, _place(rows, mine)

    async def cancel_enrollment(self, plan_id: str, uid: str, person_id: str) -> bool:
        """Cancels; True when the freed seat went to the first in line."""
        _check_enrollment(plan_id, uid, person_id)
        async with self._sessions() as session, session.begin():
            await _locked_event(session, plan_id, uid)
            rows = await _enrollments(session, plan_id, uid)
            mine = next((r for r in rows if r.person_id == person_id), None)
            if mine is None or mine.state == "cancelled":
                raise NotFound("no enrollment of that person at that event")
            held_seat = mine.state == "enrolled"
            mine.state = "cancelled"
            if not held_seat:
                return False
            waiting = sorted((r for r in rows if r.state == "waitlisted"), key=lambda r: r.sequence)
            if not waiting:
                return False
            waiting[0].state = "enrolled"
            return True


def _check_enrollment(plan_id: str, uid: str, person_id: str) -> None:
    checker = FieldChecker()
    checker.require(bool(plan_id) and len(plan_id) <= 64, "plan_id", "required")
    checker.require(bool(uid) and len(uid) <= 255, "event_uid", "required, at most 255 characters")
    checker.identifier(person_id, "person_id")
    checker.raise_if_any()


async def _locked_event(session: Any, plan_id: str, uid: str) -> EventRow:
    event: EventRow | None = await session.scalar(
        select(EventRow).where(EventRow.plan_id == plan_id, EventRow.uid == uid).with_for_update()
    )
    if event is None:
        raise NotFound("no such event in that plan")
    return event


async def _enrollments(session: Any, plan_id: str, uid: str) -> list[EnrollmentRow]:
    return list(
        (
            await session.scalars(
                select(EnrollmentRow).where(
                    EnrollmentRow.plan_id == plan_id, EnrollmentRow.event_uid == uid
                )
            )
        ).all()
    )


def _place(rows: list[EnrollmentRow], mine: EnrollmentRow) -> int:
    if mine.state != "waitlisted":
        return 0
    return 1 + sum(r.state == "waitlisted" and r.sequence < mine.sequence for r in rows)


def _event(row: EventRow) -> Event:
    return Event(
        row.activity_id,
        row.occurrence,
        _local(row.start),
        _local(row.end),
        row.room_id or None,
        tuple(row.required),
        tuple(row.optional_free),
        row.uid,
    )


def _local(moment: datetime) -> datetime:
    return moment.astimezone(TIMEZONE).replace(tzinfo=None)


def _date(checker: FieldChecker, value: str, field: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        checker.require(False, field, "a date, YYYY-MM-DD")
        return None


class PlanRunner:
    """Takes queued plans, one at a time, and plans them in a thread (CP-SAT
    releases the interpreter while it searches)."""

    def __init__(self, engine: AsyncEngine, office_days: OfficeDays) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._office_days = office_days
        self.worker = uuid.uuid4().hex[:12]

    async def run_forever(self) -> None:
        while True:
            try:
                ran = await self.run_one()
            except Exception:  # a store is down: the health probe says so
                log.warning("plan runner failed", exc_info=True)
                ran = False
            if not ran:
                await asyncio.sleep(job_queue.POLL_SECONDS)

    async def run_one(self) -> bool:
        async with self._sessions() as session, session.begin():
            row = await job_queue.claim(session, PlanRow, self.worker)
        if row is None:
            return False
        beating = asyncio.create_task(self._beat(row.plan_id))
        try:
            program = read_program(row.program_toml, row.year)
            calendar = await self._office_days.calendar(
                date(program.year, 1, 1), date(program.year, 12, 31)
            )
            plan = await asyncio.to_thread(
                plan_program, program, calendar, float(row.time_limit_seconds)
            )
        except Exception as error:
            log.warning("plan failed", extra={"plan": row.plan_id, "error": type(error).__name__})
            await self._finish(row.plan_id, state="failed", error=str(error)[:500])
            return True
        finally:
            beating.cancel()
        await self._finish(row.plan_id, plan=plan)
        log.info("plan done", extra={"plan": row.plan_id, "events": len(plan.events)})
        return True

    async def _beat(self, plan_id: str) -> None:
        while True:
            await asyncio.sleep(job_queue.HEARTBEAT.total_seconds())
            async with self._sessions() as session, session.begin():
                row = await session.get(PlanRow, plan_id, with_for_update=True)
                if row is not None and row.worker == self.worker:
                    row.heartbeat_at = clock.now()

    async def _finish(
        self, plan_id: str, state: str = "done", error: str = "", plan: Plan | None = None
    ) -> None:
        async with self._sessions() as session, session.begin():
            row = await session.get(PlanRow, plan_id, with_for_update=True)
            if row is None or row.worker != self.worker:
                return  # another replica took it over
            row.state, row.error, row.heartbeat_at = state, error, clock.now()
            if plan is None:
                return
            row.solver_status, row.seconds = plan.status, plan.seconds
            row.unplaced = [
                {
                    "activity": u.activity,
                    "occurrence": u.occurrence,
                    "rule": u.rule,
                    "explanation": u.explanation,
                }
                for u in plan.unplaced
            ]
            activities = {a.id: a for a in plan.program.activities}
            for event in plan.events:
                activity = activities[event.activity]
                session.add(
                    EventRow(
                        plan_id=plan_id,
                        uid=event.uid,
                        activity_id=event.activity,
                        title=activity.title[:300],
                        occurrence=event.occurrence,
                        kind=activity.kind.value,
                        start=event.start.replace(tzinfo=TIMEZONE),
                        end=event.end.replace(tzinfo=TIMEZONE),
                        room_id=event.room or "",
                        required=list(event.required),
                        optional_free=list(event.optional_free),
                        audience=list(activity.audience),
                        capacity=activity.capacity,
                    )
                )
