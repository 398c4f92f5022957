"""gRPC translation for the calendar service: messages in, domain calls,
messages out. Rules and checks live in `plans` and `office_days`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from eap.calendar.v1 import calendar_pb2 as pb
from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar.group_sessions import GroupProposal
from services.calendar.groups import GroupSessions
from services.calendar.local_time import naive, to_stamp
from services.calendar.office_days import OfficeDays
from services.calendar.orm import EventRow
from services.calendar.plans import Plans
from services.calendar.program import Span
from services.calendar.unplaced import from_stored
from services.runtime.errors import InvalidArgument
from services.runtime.fields import FieldChecker, moment

Context = aio.ServicerContext[Any, Any]
_PLAN_STATE = {
    "queued": pb.PLAN_STATE_QUEUED,
    "running": pb.PLAN_STATE_RUNNING,
    "done": pb.PLAN_STATE_DONE,
    "failed": pb.PLAN_STATE_FAILED,
}
_ENROLLMENT_STATE = {
    "enrolled": pb.ENROLLMENT_STATE_ENROLLED,
    "waitlisted": pb.ENROLLMENT_STATE_WAITLISTED,
    "cancelled": pb.ENROLLMENT_STATE_CANCELLED,
}


def _event_pb(e: EventRow, enrolled: int = 0, waitlisted: int = 0) -> pb.PlannedEvent:
    return pb.PlannedEvent(
        uid=e.uid,
        activity_id=e.activity_id,
        title=e.title,
        occurrence=e.occurrence,
        start=to_stamp(e.start),
        end=to_stamp(e.end),
        room_id=e.room_id,
        required_person_ids=e.required,
        optional_free_person_ids=e.optional_free,
        kind=e.kind,
        capacity=e.capacity,
        enrolled=enrolled,
        waitlisted=waitlisted,
        cancelled=e.state == "cancelled",
    )


def _local(checker: FieldChecker, stamp: Timestamp, field: str) -> datetime:
    """A request's Timestamp as naive local time, checked."""
    return naive(checker.moment(stamp, field))


def _required_start(message: Any) -> datetime:
    if not message.HasField("start"):
        raise InvalidArgument.single("start", "required")
    return naive(moment(message.start, "start"))


def _attendees(given: Any, field: str) -> list[tuple[str, list[Span]]]:
    checker = FieldChecker()
    attendees = [
        (
            a.person_id,
            [
                Span(
                    _local(checker, b.start, f"{field}[{n}].busy[{m}].start"),
                    _local(checker, b.end, f"{field}[{n}].busy[{m}].end"),
                )
                for m, b in enumerate(a.busy)
            ],
        )
        for n, a in enumerate(given)
    ]
    checker.raise_if_any()
    return attendees


class CalendarServicer(calendar_pb2_grpc.CalendarServiceServicer):
    def __init__(self, office_days: OfficeDays, plans: Plans, groups: GroupSessions) -> None:
        self._office_days = office_days
        self._plans = plans
        self._groups = groups

    async def ListOfficeDays(
        self, request: pb.ListOfficeDaysRequest, context: Context
    ) -> pb.ListOfficeDaysResponse:
        days = await self._office_days.between(request.start_date, request.end_date)
        return pb.ListOfficeDaysResponse(
            days=[
                pb.OfficeDay(
                    date=day.day.isoformat(),
                    open=day.open,
                    note=day.note,
                    make_up_workday=day.make_up_workday,
                    from_official_calendar=official,
                )
                for day, official in days
                if day.open or not request.office_days_only
            ]
        )

    async def ImportOfficeCalendar(
        self, request: pb.ImportOfficeCalendarRequest, context: Context
    ) -> pb.ImportOfficeCalendarResponse:
        days = await self._office_days.import_year(request.year, request.csv_content)
        open_days = sum(1 for d in days if d.open)
        return pb.ImportOfficeCalendarResponse(
            year=request.year, office_days=open_days, closed_days=len(days) - open_days
        )

    async def PlanProgram(
        self, request: pb.PlanProgramRequest, context: Context
    ) -> pb.PlanProgramResponse:
        plan_id = await self._plans.submit(
            request.program_toml, request.year, request.time_limit_seconds
        )
        return pb.PlanProgramResponse(plan_id=plan_id, state=pb.PLAN_STATE_QUEUED)

    async def GetPlan(self, request: pb.GetPlanRequest, context: Context) -> pb.GetPlanResponse:
        stored = await self._plans.get(request.plan_id)
        row = stored.row
        return pb.GetPlanResponse(
            plan_id=row.plan_id,
            state=_PLAN_STATE[row.state],
            name=row.name,
            year=row.year,
            events=[
                _event_pb(e, stored.enrolled.get(e.uid, 0), stored.waitlisted.get(e.uid, 0))
                for e in stored.events
            ],
            unplaced=[
                pb.UnplacedOccurrence(
                    activity_id=u["activity"],
                    occurrence=u["occurrence"],
                    rule=u["rule"],
                    explanation=from_stored(u).explanation,  # in the caller's language
                )
                for u in row.unplaced
            ],
            solver_status=row.solver_status,
            seconds=row.seconds,
            error=row.error,
        )

    async def FindMeetingTime(
        self, request: pb.FindMeetingTimeRequest, context: Context
    ) -> pb.FindMeetingTimeResponse:
        options = await self._plans.find_time(
            request.plan_id,
            _attendees(request.required, "required"),
            _attendees(request.optional, "optional"),
            request.duration_minutes,
            request.first_date,
            request.last_date,
            request.limit,
        )
        return pb.FindMeetingTimeResponse(
            options=[
                pb.MeetingOption(
                    start=to_stamp(o.start),
                    end=to_stamp(o.end),
                    can_come=o.can_come,
                    cannot_come=o.cannot_come,
                )
                for o in options
            ]
        )

    async def EnrollTraining(
        self, request: pb.EnrollTrainingRequest, context: Context
    ) -> pb.EnrollTrainingResponse:
        state, place = await self._plans.enroll(
            request.plan_id, request.event_uid, request.person_id
        )
        return pb.EnrollTrainingResponse(state=_ENROLLMENT_STATE[state], waitlist_position=place)

    async def CancelEnrollment(
        self, request: pb.CancelEnrollmentRequest, context: Context
    ) -> pb.CancelEnrollmentResponse:
        passed_on = await self._plans.cancel_enrollment(
            request.plan_id, request.event_uid, request.person_id
        )
        return pb.CancelEnrollmentResponse(
            state=pb.ENROLLMENT_STATE_CANCELLED, seat_passed_on=passed_on
        )

    async def ExportCalendar(
        self, request: pb.ExportCalendarRequest, context: Context
    ) -> pb.ExportCalendarResponse:
        ics, count = await self._plans.export(request.plan_id, request.person_id, request.room_id)
        return pb.ExportCalendarResponse(ics=ics, events=count)

    async def ScheduleEvent(
        self, request: pb.ScheduleEventRequest, context: Context
    ) -> pb.ScheduleEventResponse:
        row = await self._plans.schedule(
            request.plan_id,
            request.title,
            _required_start(request),
            request.duration_minutes,
            list(request.required_person_ids),
            list(request.optional_person_ids),
            request.room_id,
        )
        return pb.ScheduleEventResponse(event=_event_pb(row))

    async def MoveEvent(
        self, request: pb.MoveEventRequest, context: Context
    ) -> pb.MoveEventResponse:
        row = await self._plans.move(
            request.plan_id, request.event_uid, _required_start(request), request.room_id
        )
        return pb.MoveEventResponse(event=_event_pb(row))

    async def CancelEvent(
        self, request: pb.CancelEventRequest, context: Context
    ) -> pb.CancelEventResponse:
        row = await self._plans.cancel_event(request.plan_id, request.event_uid)
        return pb.CancelEventResponse(event=_event_pb(row))

    async def RecordAttendance(
        self, request: pb.RecordAttendanceRequest, context: Context
    ) -> pb.RecordAttendanceResponse:
        recorded = await self._plans.record_attendance(
            request.plan_id,
            request.event_uid,
            [(a.person_id, a.attended) for a in request.attendance],
        )
        return pb.RecordAttendanceResponse(recorded=recorded)

    async def GetAttendanceReport(
        self, request: pb.GetAttendanceReportRequest, context: Context
    ) -> pb.GetAttendanceReportResponse:
        lines = await self._plans.attendance_report(request.plan_id, request.activity_id)
        return pb.GetAttendanceReportResponse(
            lines=[
                pb.AttendanceLine(
                    person_id=person,
                    activity_id=activity,
                    recorded=recorded,
                    attended=attended,
                    full_attendance=full,
                )
                for person, activity, recorded, attended, full in lines
            ]
        )

    async def ProposeGroupSessions(
        self, request: pb.ProposeGroupSessionsRequest, context: Context
    ) -> pb.ProposeGroupSessionsResponse:
        proposals = await self._groups.propose(
            request.category,
            list(request.counselor_ids),
            request.first_date,
            request.last_date,
            request.duration_minutes,
            request.min_size,
            request.max_size,
            request.modality,
        )
        return pb.ProposeGroupSessionsResponse(proposals=[_proposal_pb(p) for p in proposals])

    async def BookGroupSessions(
        self, request: pb.BookGroupSessionsRequest, context: Context
    ) -> pb.BookGroupSessionsResponse:
        checker = FieldChecker()
        sessions = []
        for n, given in enumerate(request.sessions):
            for name in ("start", "end"):
                checker.require(given.HasField(name), f"sessions[{n}].{name}", "required")
            sessions.append(
                GroupProposal(
                    given.counselor_id,
                    _local(checker, given.start, f"sessions[{n}].start"),
                    _local(checker, given.end, f"sessions[{n}].end"),
                    tuple(given.case_ids),
                )
            )
        checker.raise_if_any()
        outcomes = await self._groups.book(sessions, request.modality, request.min_size)
        return pb.BookGroupSessionsResponse(
            sessions=[
                pb.BookedGroupSession(
                    session=_proposal_pb(o.session),
                    group_id=o.group_id,
                    booked_case_ids=o.booked,
                    refused=[
                        pb.GroupSessionRefusal(case_id=case_id, rule=rule)
                        for case_id, rule in o.refused
                    ],
                    rule=o.rule,
                    message=o.message,
                )
                for o in outcomes
            ]
        )


def _proposal_pb(proposal: GroupProposal) -> pb.GroupSessionProposal:
    return pb.GroupSessionProposal(
        counselor_id=proposal.counselor_id,
        start=to_stamp(proposal.start),
        end=to_stamp(proposal.end),
        case_ids=proposal.case_ids,
    )
