"""Plans kept in the calendar service's database: submitted as jobs, planned
by whichever replica claims them, read back, exported, and used to find
meeting times and to enroll people in trainings.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.calendar import metrics
from services.calendar import unplaced as why
from services.calendar.changes import Placement, problems
from services.calendar.ics import Revision, export_ics
from services.calendar.local_time import aware, naive
from services.calendar.meeting_time import (
    MAX_WINDOW_DAYS,
    MeetingOption,
    find_meeting_times,
)
from services.calendar.office_days import OfficeDays
from services.calendar.orm import AttendanceRow, EnrollmentRow, EventRow, PlanRow
from services.calendar.planner import Event, Plan, plan_program
from services.calendar.program import Activity, Kind, Person, Program, Span
from services.calendar.program_file import DEFAULT_OFFICE_HOURS
from services.calendar.program_reading import check_program, read_program_off_loop
from services.office_calendar import OfficeCalendar
from services.runtime import clock, job_queue, policy
from services.runtime.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
)
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.calendar")

DEFAULT_TIME_LIMIT = 20
MAX_TIME_LIMIT = 300
ADHOC = "adhoc"  # the activity id of events scheduled by hand


@dataclass(frozen=True)
class StoredPlan:
    row: PlanRow
    events: list[EventRow]
    enrolled: dict[str, int]  # by event uid
    waitlisted: dict[str, int]


class Plans:
    def __init__(self, engine: AsyncEngine, office_days: OfficeDays) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._office_days = office_days

    async def submit(self, text: str, year: int, time_limit: int) -> str:
        checker = FieldChecker()
        checker.require(year == 0 or 2000 <= year <= 2200, "year", "0, or 2000 to 2200")
        checker.require(0 <= time_limit <= MAX_TIME_LIMIT, "time_limit_seconds", "0 (20 s) to 300")
        checker.raise_if_any()
        name, year = await check_program(text, year)
        plan_id = uuid.uuid4().hex
        async with self._sessions() as session, session.begin():
            session.add(
                PlanRow(
                    plan_id=plan_id,
                    state="queued",
                    name=name[:200],
                    year=year,
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
            return await _load(session, plan_id)

    async def _done(self, plan_id: str) -> tuple[Program, Plan, StoredPlan]:
        return await _finished(await self.get(plan_id))

    async def export(self, plan_id: str, person: str, room: str) -> tuple[bytes, int]:
        program, _, stored = await self._done(plan_id)
        if person and person not in {p.id for p in program.people}:
            raise NotFound(f"no person {person!r} in the plan's programme")
        if room and room not in {r.id for r in program.rooms}:
            raise NotFound(f"no room {room!r} in the plan's programme")
        # Cancelled events too: the export marks them so that calendars drop them.
        everything = Plan(program, tuple(_event(e) for e in stored.events), (), "", 0.0)
        revisions = {
            e.uid: Revision(
                title=e.title if e.activity_id == ADHOC else None,
                sequence=e.sequence,
                cancelled=e.state == "cancelled",
            )
            for e in stored.events
        }
        ics = export_ics(everything, person or None, room or None, revisions=revisions)
        return ics, ics.count(b"BEGIN:VEVENT")

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
        first = checker.date(first_text, "first_date")
        last = checker.date(last_text, "last_date")
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
            program, plan, _ = await self._done(plan_id)
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

    # --- ad hoc changes -----------------------------------------------------

    async def schedule(
        self,
        plan_id: str,
        title: str,
        start: datetime,
        minutes: int,
        required: list[str],
        optional: list[str],
        room: str,
    ) -> EventRow:
        checker = FieldChecker()
        checker.require(0 < len(title) <= 300, "title", "1 to 300 characters")
        checker.require(15 <= minutes <= 480, "duration_minutes", "15 to 480 minutes")
        checker.require(1 <= len(required) <= 200, "required_person_ids", "1 to 200 people")
        checker.require(len(optional) <= 2000, "optional_person_ids", "at most 2,000 people")
        checker.raise_if_any()
        end = start + timedelta(minutes=minutes)
        seats = len(set(required) | set(optional))
        placement = Placement(start, end, room or None, tuple(dict.fromkeys(required)), seats)
        calendar = await self._office_days.calendar(start.date(), end.date())
        async with self._sessions() as session, session.begin():
            # Checked under the plan's lock, so two changes cannot both pass
            # against the plan as it was before either.
            await _lock_plan(session, plan_id)
            program, plan, _ = await _finished(await _load(session, plan_id))
            known = {p.id for p in program.people}
            for field, ids in (
                ("required_person_ids", required),
                ("optional_person_ids", optional),
            ):
                for n, person_id in enumerate(ids):
                    checker.require(
                        person_id in known, f"{field}[{n}]", "a person of the programme"
                    )
            checker.raise_if_any()
            _refuse_if(program, calendar, plan.events, placement, f"plan/{plan_id}")
            row = EventRow(
                plan_id=plan_id,
                uid=f"{ADHOC}-{uuid.uuid4().hex}@eap-calendar",
                activity_id=ADHOC,
                title=title,
                occurrence=1,
                kind="meeting",
                start=aware(start),
                end=aware(end),
                room_id=room,
                required=list(placement.required),
                optional_free=list(dict.fromkeys(optional)),
                audience=[],
                capacity=0,
                state="scheduled",
                sequence=0,
            )
            session.add(row)
        return row

    async def move(self, plan_id: str, uid: str, start: datetime, room: str) -> EventRow:
        calendar = await self._office_days.calendar(start.date(), start.date())
        async with self._sessions() as session, session.begin():
            await _lock_plan(session, plan_id)
            program, plan, _ = await _finished(await _load(session, plan_id))
            row = await _locked_event(session, plan_id, uid)
            if row.state == "cancelled":
                raise FailedPrecondition("EVENT_CANCELLED", f"event/{uid}", "it is cancelled")
            minutes = int((row.end - row.start).total_seconds() // 60)
            placement = Placement(
                start,
                start + timedelta(minutes=minutes),
                (room or row.room_id) or None,
                tuple(row.required),
                len(row.required) + len(row.optional_free) + row.capacity,
            )
            activities = {a.id: a for a in program.activities}
            _refuse_if(
                program,
                calendar,
                [e for e in plan.events if e.uid != uid],
                placement,
                f"event/{uid}",
                activities.get(row.activity_id),
                row.occurrence,
            )
            row.start = aware(start)
            row.end = aware(placement.end)
            row.room_id = placement.room or ""
            row.sequence += 1
        return row

    async def cancel_event(self, plan_id: str, uid: str) -> EventRow:
        async with self._sessions() as session, session.begin():
            row = await _locked_event(session, plan_id, uid)
            if row.state != "cancelled":
                row.state = "cancelled"
                row.sequence += 1
        return row

    # --- attendance -----------------------------------------------------------

    async def record_attendance(
        self, plan_id: str, uid: str, attendance: list[tuple[str, bool]]
    ) -> int:
        checker = FieldChecker()
        checker.require(1 <= len(attendance) <= 2000, "attendance", "1 to 2,000 records")
        for n, (person_id, _) in enumerate(attendance):
            checker.identifier(person_id, f"attendance[{n}].person_id")
        checker.raise_if_any()
        async with self._sessions() as session, session.begin():
            event = await _locked_event(session, plan_id, uid)
            if event.state == "cancelled":
                raise FailedPrecondition(
                    "EVENT_CANCELLED", f"event/{uid}", "the event is cancelled"
                )
            if event.start > clock.now():
                raise FailedPrecondition(
                    "EVENT_NOT_STARTED", f"event/{uid}", "attendance is recorded once it starts"
                )
            now = clock.now()
            for person_id, attended in attendance:
                row = await session.get(AttendanceRow, (plan_id, uid, person_id))
                if row is None:
                    row = AttendanceRow(plan_id=plan_id, event_uid=uid, person_id=person_id)
                    session.add(row)
                row.attended, row.recorded_at = attended, now
        return len(attendance)

    async def attendance_report(
        self, plan_id: str, activity_id: str
    ) -> list[tuple[str, str, int, int, bool]]:
        """(person, activity, recorded, attended, came to all held so far)."""
        stored = await self.get(plan_id)
        now = clock.now()
        held: dict[str, set[str]] = {}
        activity_of: dict[str, str] = {}
        for e in stored.events:
            if e.state != "cancelled" and (not activity_id or e.activity_id == activity_id):
                activity_of[e.uid] = e.activity_id
                if e.start <= now:
                    held.setdefault(e.activity_id, set()).add(e.uid)
        async with self._sessions() as session:
            rows = (
                await session.scalars(select(AttendanceRow).where(AttendanceRow.plan_id == plan_id))
            ).all()
        tally: dict[tuple[str, str], list[int]] = {}
        came: dict[tuple[str, str], set[str]] = {}
        for r in rows:
            activity = activity_of.get(r.event_uid)
            if activity is None:
                continue
            counts = tally.setdefault((activity, r.person_id), [0, 0])
            counts[0] += 1
            if r.attended:
                counts[1] += 1
                came.setdefault((activity, r.person_id), set()).add(r.event_uid)
        return [
            (
                person,
                activity,
                recorded,
                attended,
                bool(held.get(activity)) and held[activity] <= came.get((activity, person), set()),
            )
            for (activity, person), (recorded, attended) in sorted(tally.items())
        ]

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


def _refuse_if(
    program: Program,
    calendar: OfficeCalendar,
    others: Sequence[Event],
    placement: Placement,
    subject: str,
    activity: Activity | None = None,
    occurrence: int = 0,
) -> None:
    found = problems(program, calendar, others, placement, activity, occurrence)
    if found:
        raise FailedPrecondition(found[0].rule, subject, "; ".join(p.words for p in found))


async def _load(session: Any, plan_id: str) -> StoredPlan:
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


async def _finished(stored: StoredPlan) -> tuple[Program, Plan, StoredPlan]:
    """A finished plan's programme, its live events as the planner's values
    (cancelled ones left out), and the stored rows."""
    if stored.row.state != "done":
        raise FailedPrecondition(
            "PLAN_NOT_DONE",
            f"plan/{stored.row.plan_id}",
            f"the plan is {stored.row.state}, not done yet",
        )
    program = await read_program_off_loop(stored.row.program_toml, stored.row.year)
    events = tuple(_event(e) for e in stored.events if e.state != "cancelled")
    unplaced = tuple(why.from_stored(u) for u in stored.row.unplaced)
    plan = Plan(program, events, unplaced, stored.row.solver_status, stored.row.seconds)
    return program, plan, stored


async def _lock_plan(session: Any, plan_id: str) -> None:
    """Serialises changes to one plan across replicas."""
    row = await session.scalar(
        select(PlanRow.plan_id).where(PlanRow.plan_id == plan_id).with_for_update()
    )
    if row is None:
        raise NotFound(f"no plan {plan_id!r}")


def _check_enrollment(plan_id: str, uid: str, person_id: str) -> None:
    checker = FieldChecker()
    checker.require(bool(plan_id) and len(plan_id) <= 64, "plan_id", "required")
    checker.require(bool(uid) and len(uid) <= 255, "event_uid", "required, at most 255 characters")
    checker.identifier(person_id, "person_id")
    checker.raise_if_any()
    policy.require_own(PermissionDenied("people enroll only themselves"), person_id=person_id)


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
        naive(row.start),
        naive(row.end),
        row.room_id or None,
        tuple(row.required),
        tuple(row.optional_free),
        row.uid,
    )


class PlanRunner:
    """Takes queued plans, one at a time, and plans them in a thread (CP-SAT
    releases the interpreter while it searches)."""

    def __init__(self, engine: AsyncEngine, office_days: OfficeDays) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._office_days = office_days
        self.worker = uuid.uuid4().hex[:12]

    async def run_forever(self) -> None:
        await job_queue.run_forever(self.run_one, "plan")

    async def run_one(self) -> bool:
        async with self._sessions() as session, session.begin():
            row = await job_queue.claim(session, PlanRow, self.worker)
        if row is None:
            return False
        beating = asyncio.create_task(self._beat(row.plan_id))
        try:
            program = await read_program_off_loop(row.program_toml, row.year)
            calendar = await self._office_days.calendar(
                date(program.year, 1, 1), date(program.year, 12, 31)
            )
            plan = await asyncio.to_thread(
                plan_program, program, calendar, float(row.time_limit_seconds)
            )
        except Exception as error:
            log.warning("plan failed", extra={"plan": row.plan_id, "error": type(error).__name__})
            await self._finish(row.plan_id, state="failed", error=str(error)[:500])
            metrics.PLANS.labels("failed").inc()
            return True
        finally:
            beating.cancel()
        await self._finish(row.plan_id, plan=plan)
        metrics.PLANS.labels("done").inc()
        metrics.PLAN_SECONDS.observe(plan.seconds)
        for left_out in plan.unplaced:
            metrics.UNPLACED.labels(left_out.rule).inc()
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
                    # English for readers of the rows; GetPlan shows the caller's.
                    "explanation": u.words["en"],
                    "words": dict(u.words),
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
                        start=aware(event.start),
                        end=aware(event.end),
                        room_id=event.room or "",
                        required=list(event.required),
                        optional_free=list(event.optional_free),
                        audience=list(activity.audience),
                        capacity=activity.capacity,
                    )
                )
