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
from prometheus_client import REGISTRY

from eap.calendar.v1 import calendar_pb2 as pb
from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar.service import CalendarService
from services.runtime import clock
from services.runtime.server import start
from tests.conftest import TAIPEI, Backend
from tests.quota.test_rpcs import details, refused

EXAMPLE = Path(__file__).resolve().parents[2] / "services/calendar/examples/pingtung-2027.toml"


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
    done_before = REGISTRY.get_sample_value("eap_calendar_plans_total", {"state": "done"}) or 0
    plan = await planned(calendar, EXAMPLE.read_text())
    assert (
        REGISTRY.get_sample_value("eap_calendar_plans_total", {"state": "done"}) == done_before + 1
    )
    assert (REGISTRY.get_sample_value("eap_calendar_plan_seconds_count") or 0) >= 1
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


def _local(stamp: Timestamp) -> dt.datetime:
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(TAIPEI).replace(tzinfo=None)


async def test_ad_hoc_changes_keep_the_plan_valid(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    plan = await planned(calendar, EXAMPLE.read_text())
    pid = plan.plan_id
    people = ["deputy-personnel", "wc-leader-1"]
    found = await calendar.FindMeetingTime(
        pb.FindMeetingTimeRequest(
            plan_id=pid,
            required=[pb.Attendee(person_id=p) for p in people],
            duration_minutes=60,
            first_date="2027-06-01",
            last_date="2027-06-30",
        )
    )
    slot = found.options[0]
    request = pb.ScheduleEventRequest(
        plan_id=pid,
        title="Ad hoc working circle meeting",
        start=slot.start,
        duration_minutes=60,
        required_person_ids=people,
        room_id="meeting-room-5f",
    )
    added = (await calendar.ScheduleEvent(request)).event
    assert (added.activity_id, _local(added.start)) == ("adhoc", _local(slot.start))

    async def rule_of(call: object) -> str:
        error = await refused(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        return str(details(error)["PreconditionFailure"].violations[0].type)  # type: ignore[attr-defined]

    assert await rule_of(calendar.ScheduleEvent(request)) == "DOUBLE_BOOKED"
    holiday = pb.ScheduleEventRequest()
    holiday.CopyFrom(request)
    holiday.start.CopyFrom(_stamp(dt.datetime(2027, 2, 8, 9)))  # Lunar New Year
    assert await rule_of(calendar.ScheduleEvent(holiday)) == "NOT_AN_OFFICE_DAY"
    lunch = pb.ScheduleEventRequest()
    lunch.CopyFrom(request)
    lunch.start.CopyFrom(_stamp(dt.datetime(2027, 6, 2, 12, 0)))
    assert await rule_of(calendar.ScheduleEvent(lunch)) == "OUTSIDE_OFFICE_HOURS"
    crowd = pb.ScheduleEventRequest()
    crowd.CopyFrom(request)
    crowd.start.CopyFrom(_stamp(dt.datetime(2027, 6, 3, 14, 0)))
    crowd.required_person_ids.extend([f"cv-{n:02d}" for n in range(1, 12)])
    too_many = await refused(calendar.ScheduleEvent(crowd))
    assert "room meeting-room-5f seats 12, not 13" in (too_many.details() or "")
    stranger = pb.ScheduleEventRequest()
    stranger.CopyFrom(request)
    stranger.required_person_ids.append("nobody")
    assert (await refused(calendar.ScheduleEvent(stranger))).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    # Moves keep an occurrence in its window and its people free.
    second_circle = next(
        e for e in plan.events if e.activity_id == "working-circle" and e.occurrence == 2
    )
    january = _stamp(dt.datetime(2027, 1, 20, 9))
    moved_out = calendar.MoveEvent(
        pb.MoveEventRequest(plan_id=pid, event_uid=second_circle.uid, start=january)
    )
    assert await rule_of(moved_out) == "OUTSIDE_WINDOW"
    review = next(e for e in plan.events if e.activity_id == "review" and e.occurrence == 1)
    monday_morning = _stamp(dt.datetime(2027, 2, 22, 9))  # the secretary-general's weekly meeting
    busy = calendar.MoveEvent(
        pb.MoveEventRequest(plan_id=pid, event_uid=review.uid, start=monday_morning)
    )
    assert await rule_of(busy) == "ATTENDEE_BUSY"
    free_day = _stamp(dt.datetime(2027, 2, 23, 14))
    moved = (
        await calendar.MoveEvent(
            pb.MoveEventRequest(plan_id=pid, event_uid=review.uid, start=free_day)
        )
    ).event
    assert _local(moved.start) == dt.datetime(2027, 2, 23, 14)
    assert moved.end.ToDatetime() - moved.start.ToDatetime() == dt.timedelta(minutes=90)

    # A cancellation frees the time and stays in the export as cancelled.
    cancelled = (
        await calendar.CancelEvent(pb.CancelEventRequest(plan_id=pid, event_uid=added.uid))
    ).event
    assert cancelled.cancelled
    again = (await calendar.ScheduleEvent(request)).event
    assert _local(again.start) == _local(slot.start)
    exported = await calendar.ExportCalendar(pb.ExportCalendarRequest(plan_id=pid))
    events = {str(v["uid"]): v for v in icalendar.Calendar.from_ical(exported.ics).walk("VEVENT")}
    assert str(events[added.uid]["status"]) == "CANCELLED"
    assert int(events[review.uid]["sequence"]) == 1
    assert str(events[again.uid]["summary"]) == "Ad hoc working circle meeting"
    after = await calendar.GetPlan(pb.GetPlanRequest(plan_id=pid))
    assert len(after.events) == 21 and sum(e.cancelled for e in after.events) == 1


async def test_attendance_is_recorded_and_reported(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
) -> None:
    plan = await planned(calendar, EXAMPLE.read_text())
    circles = [e for e in plan.events if e.activity_id == "working-circle"]
    early = await refused(
        calendar.RecordAttendance(
            pb.RecordAttendanceRequest(
                plan_id=plan.plan_id,
                event_uid=circles[0].uid,
                attendance=[pb.Attendance(person_id="wc-leader-1", attended=True)],
            )
        )
    )
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
    with clock.moved_to(dt.datetime(2027, 12, 31, 12, tzinfo=TAIPEI)):
        for n, circle in enumerate(circles):
            await calendar.RecordAttendance(
                pb.RecordAttendanceRequest(
                    plan_id=plan.plan_id,
                    event_uid=circle.uid,
                    attendance=[
                        pb.Attendance(person_id="wc-leader-1", attended=True),
                        pb.Attendance(person_id="wc-leader-2", attended=n != 2),
                    ],
                )
            )
        report = await calendar.GetAttendanceReport(
            pb.GetAttendanceReportRequest(plan_id=plan.plan_id, activity_id="working-circle")
        )
    lines = {(line.person_id, line.activity_id): line for line in report.lines}
    first = lines[("wc-leader-1", "working-circle")]
    second = lines[("wc-leader-2", "working-circle")]
    assert (first.recorded, first.attended, first.full_attendance) == (4, 4, True)
    assert (second.recorded, second.attended, second.full_attendance) == (4, 3, False)
