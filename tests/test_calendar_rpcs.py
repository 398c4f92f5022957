"""The calendar service over gRPC, on SQLite and on PostgreSQL: plan jobs,
plans read back and exported, meeting times, and training enrollment with
capacity and a waitlist under concurrent requests."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import icalendar
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from eap.calendar.v1 import calendar_pb2 as pb
from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar.service import CalendarService
from services.runtime.server import start
from tests.conftest import TAIPEI, Backend
from tests.test_quota_rpcs import details, refused

EXAMPLE = Path(__file__).resolve().parents[1] / "services/calendar/examples/pingtung-2027.toml"


@pytest.fixture
async def calendar(backend: Backend) -> AsyncIterator[calendar_pb2_grpc.CalendarServiceAsyncStub]:
    server = await start([CalendarService()], backend.settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield calendar_pb2_grpc.CalendarServiceStub(channel)  # type: ignore[misc]
    await server.stop(0)


async def planned(
    stub: calendar_pb2_grpc.CalendarServiceAsyncStub, text: str, seconds: int = 20
) -> pb.GetPlanResponse:
    submitted = await stub.PlanProgram(
        pb.PlanProgramRequest(program_toml=text, time_limit_seconds=seconds)
    )
    assert submitted.state == pb.PLAN_STATE_QUEUED
    for _ in range(600):
        plan = await stub.GetPlan(pb.GetPlanRequest(plan_id=submitted.plan_id))
        if plan.state in (pb.PLAN_STATE_DONE, pb.PLAN_STATE_FAILED):
            return plan
        await asyncio.sleep(0.1)
    raise AssertionError("the plan did not finish in 60 s")


def _stamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.replace(tzinfo=TAIPEI))
    return stamp


async def test_a_programme_is_planned_read_back_and_exported(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    plan = await planned(calendar, EXAMPLE.read_text())
    assert plan.state == pb.PLAN_STATE_DONE, plan.error
    assert (plan.name, plan.year, len(plan.events), len(plan.unplaced)) == (
        "Pingtung County EAP 2027",
        2027,
        19,
        0,
    )
    assert plan.solver_status in ("OPTIMAL", "FEASIBLE")
    circle = [e for e in plan.events if e.activity_id == "working-circle"]
    assert [e.occurrence for e in circle] == [1, 2, 3, 4]
    first = circle[0].start.ToDatetime(tzinfo=dt.UTC).astimezone(TAIPEI)
    assert first.year == 2027 and dt.time(8, 30) <= first.time() <= dt.time(17, 30)
    exported = await calendar.ExportCalendar(pb.ExportCalendarRequest(plan_id=plan.plan_id))
    parsed = icalendar.Calendar.from_ical(exported.ics)
    assert exported.events == 19
    assert {str(v["uid"]) for v in parsed.walk("VEVENT")} == {e.uid for e in plan.events}
    own = await calendar.ExportCalendar(
        pb.ExportCalendarRequest(plan_id=plan.plan_id, person_id="group-counselor-1")
    )
    assert own.events == 6
    # The same programme planned again keeps its event uids.
    again = await planned(calendar, EXAMPLE.read_text())
    assert {e.uid for e in again.events} == {e.uid for e in plan.events}


async def test_bad_requests_are_refused_and_store_nothing(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    broken = EXAMPLE.read_text().replace("duration_minutes = 60\n", "duration_minutes = -60\n")
    error = await refused(calendar.PlanProgram(pb.PlanProgramRequest(program_toml=broken)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = details(error)["BadRequest"].field_violations[0]  # type: ignore[attr-defined]
    assert violation.field == "program_toml: activities[3].duration_minutes"
    assert violation.description.startswith("line ")
    for request in (
        pb.PlanProgramRequest(program_toml=EXAMPLE.read_text(), year=1999),
        pb.PlanProgramRequest(program_toml=EXAMPLE.read_text(), time_limit_seconds=100_000),
        pb.PlanProgramRequest(program_toml="not = [toml"),
    ):
        assert (await refused(calendar.PlanProgram(request))).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    missing = await refused(calendar.GetPlan(pb.GetPlanRequest(plan_id="nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    submitted = await calendar.PlanProgram(pb.PlanProgramRequest(program_toml=EXAMPLE.read_text()))
    early = await refused(
        calendar.ExportCalendar(pb.ExportCalendarRequest(plan_id=submitted.plan_id))
    )
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(early)["PreconditionFailure"].violations[0].type == "PLAN_NOT_DONE"  # type: ignore[attr-defined]


async def test_meeting_times_fit_everyone_required(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    # Monday 2027-03-08: the chair is busy all morning and after 15:30; the
    # secretary from 13:30 to 14:30. One hour fits only at 14:30.
    request = pb.FindMeetingTimeRequest(
        required=[
            pb.Attendee(
                person_id="chair",
                busy=[
                    pb.BusyTime(
                        start=_stamp(dt.datetime(2027, 3, 8, 8)),
                        end=_stamp(dt.datetime(2027, 3, 8, 12)),
                    ),
                    pb.BusyTime(
                        start=_stamp(dt.datetime(2027, 3, 8, 15, 30)),
                        end=_stamp(dt.datetime(2027, 3, 8, 18)),
                    ),
                ],
            ),
            pb.Attendee(
                person_id="secretary",
                busy=[
                    pb.BusyTime(
                        start=_stamp(dt.datetime(2027, 3, 8, 13, 30)),
                        end=_stamp(dt.datetime(2027, 3, 8, 14, 30)),
                    )
                ],
            ),
        ],
        optional=[pb.Attendee(person_id="guest")],
        duration_minutes=60,
        first_date="2027-03-08",
        last_date="2027-03-08",
    )
    found = await calendar.FindMeetingTime(request)
    assert [o.start.ToDatetime(tzinfo=dt.UTC).astimezone(TAIPEI).time() for o in found.options] == [
        dt.time(14, 30)
    ]
    assert list(found.options[0].can_come) == ["guest"]
    request.last_date = "2026-01-01"
    error = await refused(calendar.FindMeetingTime(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_enrollment_keeps_to_capacity_under_fifty_at_once(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    text = EXAMPLE.read_text().replace("capacity = 40", "capacity = 10")
    plan = await planned(calendar, text)
    training = next(e for e in plan.events if e.activity_id == "eap-staff-training")
    assert training.capacity == 10
    people = [f"cv-{n:02d}" for n in range(1, 17)] + [f"wc-{n:02d}" for n in range(1, 15)]
    people += [f"wc-leader-{n}" for n in range(1, 7)] + ["deputy-personnel"]
    people = people[:37]

    async def enroll(person: str) -> pb.EnrollTrainingResponse:
        return await calendar.EnrollTraining(
            pb.EnrollTrainingRequest(plan_id=plan.plan_id, event_uid=training.uid, person_id=person)
        )

    answers = await asyncio.gather(*(enroll(p) for p in people + people[:13]))  # 50 requests
    first = answers[: len(people)]
    seated = [
        p for p, a in zip(people, first, strict=True) if a.state == pb.ENROLLMENT_STATE_ENROLLED
    ]
    waiting = {
        a.waitlist_position: p
        for p, a in zip(people, first, strict=True)
        if a.state == pb.ENROLLMENT_STATE_WAITLISTED
    }
    assert len(seated) == 10
    assert sorted(waiting) == list(range(1, 28))  # 27 in line, each with its own place
    for repeat, person in zip(answers[len(people) :], people[:13], strict=True):
        assert repeat.state == next(
            a.state for p, a in zip(people, first, strict=True) if p == person
        )
    after = await calendar.GetPlan(pb.GetPlanRequest(plan_id=plan.plan_id))
    counted = next(e for e in after.events if e.uid == training.uid)
    assert (counted.enrolled, counted.waitlisted) == (10, 27)

    cancelled = await calendar.CancelEnrollment(
        pb.CancelEnrollmentRequest(
            plan_id=plan.plan_id, event_uid=training.uid, person_id=seated[0]
        )
    )
    assert cancelled.seat_passed_on
    promoted = await enroll(waiting[1])
    assert promoted.state == pb.ENROLLMENT_STATE_ENROLLED
    moved_up = await enroll(waiting[2])
    assert (moved_up.state, moved_up.waitlist_position) == (pb.ENROLLMENT_STATE_WAITLISTED, 1)


async def test_enrollment_rules(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    plan = await planned(calendar, EXAMPLE.read_text())
    training = next(e for e in plan.events if e.activity_id == "eap-staff-training")
    meeting = next(e for e in plan.events if e.activity_id == "review")

    async def rule_of(uid: str, person: str) -> str:
        error = await refused(
            calendar.EnrollTraining(
                pb.EnrollTrainingRequest(plan_id=plan.plan_id, event_uid=uid, person_id=person)
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        return str(details(error)["PreconditionFailure"].violations[0].type)  # type: ignore[attr-defined]

    assert await rule_of(meeting.uid, "cv-01") == "NOT_ENROLLABLE"
    assert await rule_of(training.uid, "trainer-psychology") == "NOT_IN_AUDIENCE"
    unknown = await refused(
        calendar.EnrollTraining(
            pb.EnrollTrainingRequest(plan_id=plan.plan_id, event_uid="nope", person_id="cv-01")
        )
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    nobody = await refused(
        calendar.CancelEnrollment(
            pb.CancelEnrollmentRequest(
                plan_id=plan.plan_id, event_uid=training.uid, person_id="cv-01"
            )
        )
    )
    assert nobody.code() == grpc.StatusCode.NOT_FOUND
