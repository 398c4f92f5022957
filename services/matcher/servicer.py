"""gRPC translation for the matcher service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from typing import Any

from grpc import aio

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.booking.availability import Availability
from services.matcher.booking.cases import Case, TimeOff, TimeRange
from services.matcher.booking.groups import GroupBookings, GroupRequest
from services.matcher.booking.records import CaseRecords
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.slots import Offer
from services.matcher.booking.store import BookingView
from services.matcher.optimization.instance import CaseKind
from services.matcher.optimization.jobs import JobRequest, Jobs, Proposed
from services.matcher.orm import JobRow
from services.matcher.registry.counselors import (
    AvailabilityException,
    Category,
    Counselor,
    ExceptionKind,
    Modality,
    WeeklyWindow,
)
from services.matcher.registry.directory import Contact, Directory
from services.matcher.registry.staff import StaffDirectory, StaffMember
from services.matcher.registry.store import CounselorRegistry
from services.runtime import paging, policy
from services.runtime.errors import InvalidArgument
from services.runtime.fields import FieldChecker, moment, timestamp
from services.runtime.policy import Scope

Context = aio.ServicerContext[Any, Any]

CATEGORIES = {
    pb.CATEGORY_PSYCHOLOGICAL: Category.PSYCHOLOGICAL,
    pb.CATEGORY_LEGAL: Category.LEGAL,
    pb.CATEGORY_FINANCIAL: Category.FINANCIAL,
    pb.CATEGORY_FAMILY: Category.FAMILY,
    pb.CATEGORY_HEALTH: Category.HEALTH,
    pb.CATEGORY_MANAGEMENT: Category.MANAGEMENT,
}
MODALITIES = {
    pb.MODALITY_IN_PERSON: Modality.IN_PERSON,
    pb.MODALITY_VIDEO: Modality.VIDEO,
    pb.MODALITY_PHONE: Modality.PHONE,
}
_CATEGORY_PB = {v: k for k, v in CATEGORIES.items()}
_MODALITY_PB = {v: k for k, v in MODALITIES.items()}
EXCEPTION_KINDS = {
    pb.EXCEPTION_KIND_LEAVE: ExceptionKind.LEAVE,
    pb.EXCEPTION_KIND_EXTRA: ExceptionKind.EXTRA,
}
_EXCEPTION_KIND_PB = {v: k for k, v in EXCEPTION_KINDS.items()}
KINDS = {
    pb.CASE_KIND_GENERAL: CaseKind.GENERAL,
    pb.CASE_KIND_CRISIS: CaseKind.CRISIS,
    pb.CASE_KIND_INVOLUNTARY: CaseKind.INVOLUNTARY,
}
TIME_OFF = {pb.TIME_OFF_LEAVE: TimeOff.LEAVE, pb.TIME_OFF_OFFICIAL_LEAVE: TimeOff.OFFICIAL_LEAVE}
_KIND_PB = {v: k for k, v in KINDS.items()}
_TIME_OFF_PB = {v: k for k, v in TIME_OFF.items()}
_STATE_PB = {
    "held": pb.BOOKING_STATE_HELD,
    "booked": pb.BOOKING_STATE_BOOKED,
    "completed": pb.BOOKING_STATE_COMPLETED,
    "cancelled": pb.BOOKING_STATE_CANCELLED,
    "released": pb.BOOKING_STATE_RELEASED,
}
MAX_SLOTS = 200


def _required_moment(checker: FieldChecker, message: Any, name: str, field: str) -> datetime:
    if not message.HasField(name):
        checker.require(False, field, "required")
        return datetime.min.replace(tzinfo=UTC)
    return checker.moment(getattr(message, name), field)


def _clock(checker: FieldChecker, value: str, field: str) -> time:
    try:
        if len(value) != 5:
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        checker.require(False, field, "a time of day, HH:MM")
        return time(0)


def counselor_from_pb(message: pb.Counselor) -> Counselor:
    """The domain counselor, or INVALID_ARGUMENT naming every bad field."""
    checker = FieldChecker()
    for n, category in enumerate(message.specialties):
        checker.require(category in CATEGORIES, f"counselor.specialties[{n}]", "a known category")
    for n, modality in enumerate(message.modalities):
        checker.require(modality in MODALITIES, f"counselor.modalities[{n}]", "a known modality")
    windows = tuple(
        WeeklyWindow(
            w.weekday,
            _clock(checker, w.start_time, f"counselor.weekly_availability[{n}].start_time"),
            _clock(checker, w.end_time, f"counselor.weekly_availability[{n}].end_time"),
        )
        for n, w in enumerate(message.weekly_availability)
    )
    exceptions = []
    for n, e in enumerate(message.exceptions):
        field = f"counselor.exceptions[{n}]"
        checker.require(e.kind in EXCEPTION_KINDS, f"{field}.kind", "leave or extra")
        exceptions.append(
            AvailabilityException(
                EXCEPTION_KINDS.get(e.kind, ExceptionKind.LEAVE),
                _required_moment(checker, e.range, "start", f"{field}.range.start"),
                _required_moment(checker, e.range, "end", f"{field}.range.end"),
                e.note,
            )
        )
    checker.raise_if_any()
    return Counselor(
        counselor_id=message.counselor_id,
        provider_id=message.provider_id,
        display_name=message.display_name,
        specialties=tuple(dict.fromkeys(CATEGORIES[s] for s in message.specialties)),
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in message.modalities)),
        location=message.location,
        max_sessions_per_day=message.max_sessions_per_day,
        weekly_availability=windows,
        exceptions=tuple(exceptions),
    )


def counselor_pb(counselor: Counselor) -> pb.Counselor:
    return pb.Counselor(
        counselor_id=counselor.counselor_id,
        provider_id=counselor.provider_id,
        display_name=counselor.display_name,
        specialties=[_CATEGORY_PB[s] for s in counselor.specialties],
        modalities=[_MODALITY_PB[m] for m in counselor.modalities],
        location=counselor.location,
        max_sessions_per_day=counselor.max_sessions_per_day,
        weekly_availability=[
            pb.WeeklyWindow(
                weekday=w.weekday,
                start_time=w.start.strftime("%H:%M"),
                end_time=w.end.strftime("%H:%M"),
            )
            for w in counselor.weekly_availability
        ],
        exceptions=[
            pb.AvailabilityException(
                kind=_EXCEPTION_KIND_PB[e.kind],
                range=pb.TimeRange(start=timestamp(e.start), end=timestamp(e.end)),
                note=e.note,
            )
            for e in counselor.exceptions
        ],
    )


def case_from_pb(message: pb.Case) -> Case:
    """The domain case, or INVALID_ARGUMENT naming every bad field (the
    rest of the checks are the domain's, in `cases.validate`)."""
    checker = FieldChecker()
    checker.require(message.category in CATEGORIES, "case.category", "a known category")
    checker.require(message.kind in KINDS, "case.kind", "general, crisis or involuntary")
    checker.require(message.time_off in TIME_OFF, "case.time_off", "leave or official leave")
    for n, modality in enumerate(message.modalities):
        checker.require(modality in MODALITIES, f"case.modalities[{n}]", "a known modality")
    ranges = tuple(
        TimeRange(
            _required_moment(checker, r, "start", f"case.availability[{n}].start"),
            _required_moment(checker, r, "end", f"case.availability[{n}].end"),
        )
        for n, r in enumerate(message.availability)
    )
    checker.raise_if_any()
    return Case(
        case_id=message.case_id,
        employee_id=message.employee_id,
        agency_id=message.agency_id,
        staff_category=message.staff_category,
        category=CATEGORIES[message.category],
        kind=KINDS[message.kind],
        referral_reference=message.referral_reference,
        sessions_wanted=message.sessions_wanted,
        minutes=message.minutes,
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in message.modalities)),
        availability=ranges,
        preferred_counselor_id=message.preferred_counselor_id,
        excluded_counselor_ids=tuple(dict.fromkeys(message.excluded_counselor_ids)),
        time_off=TIME_OFF[message.time_off],
        submitted_at=datetime.min.replace(tzinfo=UTC),
        accepts_group=message.accepts_group,
    )


def case_pb(case: Case) -> pb.Case:
    return pb.Case(
        case_id=case.case_id,
        employee_id=case.employee_id,
        agency_id=case.agency_id,
        staff_category=case.staff_category,
        category=_CATEGORY_PB[case.category],
        kind=_KIND_PB[case.kind],
        referral_reference=case.referral_reference,
        sessions_wanted=case.sessions_wanted,
        minutes=case.minutes,
        modalities=[_MODALITY_PB[m] for m in case.modalities],
        availability=[
            pb.TimeRange(start=timestamp(r.start), end=timestamp(r.end)) for r in case.availability
        ],
        preferred_counselor_id=case.preferred_counselor_id,
        excluded_counselor_ids=list(case.excluded_counselor_ids),
        time_off=_TIME_OFF_PB[case.time_off],
        submitted_at=timestamp(case.submitted_at),
        accepts_group=case.accepts_group,
    )


def booking_pb(booking: BookingView) -> pb.Booking:
    message = pb.Booking(
        booking_id=booking.booking_id,
        case_id=booking.case_id,
        counselor_id=booking.counselor_id,
        start=timestamp(booking.start),
        minutes=booking.minutes,
        modality=_MODALITY_PB[booking.modality],
        state=_STATE_PB[booking.state],
        group_id=booking.group_id,
    )
    if booking.hold_expires_at is not None:
        message.hold_expires_at.CopyFrom(timestamp(booking.hold_expires_at))
    return message


def slot_pb(offer: Offer) -> pb.Slot:
    return pb.Slot(
        counselor_id=offer.counselor.counselor_id,
        counselor_name=offer.counselor.display_name,
        start=timestamp(offer.start),
        minutes=offer.minutes,
        modality=_MODALITY_PB[offer.modality],
        preferred=offer.preferred,
        within_crisis_deadline=offer.within_deadline,
    )


_JOB_STATE_PB = {
    "queued": pb.MATCH_JOB_STATE_QUEUED,
    "running": pb.MATCH_JOB_STATE_RUNNING,
    "done": pb.MATCH_JOB_STATE_DONE,
    "failed": pb.MATCH_JOB_STATE_FAILED,
}
WEIGHT_NAMES = ("crisis_session", "session", "continuity", "wait_day", "cost_per_kntd")


def job_pb(job: JobRow) -> pb.MatchJob:
    gap = max(job.bound - job.best_score, 0.0) / max(abs(job.best_score), 1.0)
    return pb.MatchJob(
        job_id=job.job_id,
        state=_JOB_STATE_PB[job.state],
        best_score=job.best_score,
        bound=job.bound,
        gap=gap if job.best_score else 0.0,
        elapsed_seconds=job.elapsed_seconds,
        time_limit_seconds=job.time_limit_seconds,
        attempts=job.attempts,
        error=job.error,
    )


def proposed_pb(session: Proposed) -> pb.ProposedSession:
    return pb.ProposedSession(
        case_id=session.case_id,
        counselor_id=session.counselor_id,
        start=timestamp(session.start),
        minutes=session.minutes,
        modality=_MODALITY_PB[Modality(session.modality)],
    )


def job_request_from_pb(request: pb.SubmitMatchJobRequest) -> JobRequest:
    checker = FieldChecker()
    start = _required_moment(checker, request, "horizon_start", "horizon_start")
    what_if: dict[str, int] = {}
    for n, change in enumerate(request.what_if):
        checker.require(change.agency_id not in what_if, f"what_if[{n}].agency_id", "named twice")
        what_if[change.agency_id] = change.extra_ntd
    checker.raise_if_any()
    weights = {
        name: getattr(request.weights, name)
        for name in WEIGHT_NAMES
        if request.weights.HasField(name)  # type: ignore[arg-type]
    }
    return JobRequest(
        horizon_start=start,
        weeks=request.weeks,
        case_ids=list(dict.fromkeys(request.case_ids)),
        time_limit_seconds=request.time_limit_seconds or 30,
        weights=weights,
        what_if=what_if,
    )


class MatcherServicer(matcher_pb2_grpc.MatcherServiceServicer):
    def __init__(
        self,
        *,
        registry: CounselorRegistry,
        directory: Directory,
        cases: CaseRecords,
        search: SlotSearch,
        availability: Availability,
        bookings: BookingSaga,
        groups: GroupBookings,
        jobs: Jobs,
        staff: StaffDirectory,
    ) -> None:
        self._staff = staff
        self._registry = registry
        self._directory = directory
        self._cases = cases
        self._search = search
        self._availability = availability
        self._bookings = bookings
        self._groups = groups
        self._jobs = jobs

    async def UpsertCounselor(
        self, request: pb.UpsertCounselorRequest, context: Context
    ) -> pb.UpsertCounselorResponse:
        counselor = counselor_from_pb(request.counselor)
        created = await self._registry.upsert(counselor)
        return pb.UpsertCounselorResponse(counselor=counselor_pb(counselor), created=created)

    async def GetCounselor(
        self, request: pb.GetCounselorRequest, context: Context
    ) -> pb.GetCounselorResponse:
        return pb.GetCounselorResponse(
            counselor=counselor_pb(await self._registry.get(request.counselor_id))
        )

    async def ListCounselors(
        self, request: pb.ListCounselorsRequest, context: Context
    ) -> pb.ListCounselorsResponse:
        size = paging.page_size(request.page_size, 100, 500)
        specialty = CATEGORIES.get(request.specialty)
        counselors = await self._registry.list(
            request.provider_id, specialty, paging.after(request.page_token), size + 1
        )
        page = counselors[:size]
        return pb.ListCounselorsResponse(
            counselors=[counselor_pb(c) for c in page],
            next_page_token=paging.page_token(page[-1].counselor_id)
            if len(counselors) > size
            else "",
        )

    async def SubmitCase(
        self, request: pb.SubmitCaseRequest, context: Context
    ) -> pb.SubmitCaseResponse:
        case, created = await self._cases.submit_case(
            case_from_pb(request.case), request.request_id
        )
        if policy.scope() is Scope.REFERRAL:
            return pb.SubmitCaseResponse(case=pb.Case(case_id=case.case_id), created=created)
        return pb.SubmitCaseResponse(case=case_pb(case), created=created)

    async def GetCase(self, request: pb.GetCaseRequest, context: Context) -> pb.GetCaseResponse:
        case, bookings = await self._cases.get_case(request.case_id)
        return pb.GetCaseResponse(case=case_pb(case), bookings=[booking_pb(b) for b in bookings])

    async def ListCases(
        self, request: pb.ListCasesRequest, context: Context
    ) -> pb.ListCasesResponse:
        size = paging.page_size(request.page_size, 20, 100)
        key = paging.after(request.page_token)
        after = None
        if key is not None:
            moment, _, case_id = key.partition("|")
            try:
                after = (datetime.fromisoformat(moment), case_id)
            except ValueError:
                raise InvalidArgument.single(
                    "page_token", "not a token this service gave"
                ) from None
        found = await self._cases.list_cases(request.employee_id, after, size + 1)
        page = found[:size]
        last = page[-1][0] if page else None
        return pb.ListCasesResponse(
            cases=[
                pb.CaseBookings(case=case_pb(case), bookings=[booking_pb(b) for b in bookings])
                for case, bookings in page
            ],
            next_page_token=(
                paging.page_token(f"{last.submitted_at.isoformat()}|{last.case_id}")
                if last is not None and len(found) > size
                else ""
            ),
        )

    async def FindSlots(
        self, request: pb.FindSlotsRequest, context: Context
    ) -> pb.FindSlotsResponse:
        checker = FieldChecker()
        checker.require(0 <= request.max_slots <= MAX_SLOTS, "max_slots", f"0 to {MAX_SLOTS}")
        checker.raise_if_any()
        offers = await self._search.find_slots(
            request.case_id,
            moment(request.window_start, "window_start")
            if request.HasField("window_start")
            else None,
            moment(request.window_end, "window_end") if request.HasField("window_end") else None,
            request.max_slots or 20,
        )
        return pb.FindSlotsResponse(slots=[slot_pb(o) for o in offers])

    async def HoldSlot(self, request: pb.HoldSlotRequest, context: Context) -> pb.HoldSlotResponse:
        checker = FieldChecker()
        start = _required_moment(checker, request, "start", "start")
        checker.raise_if_any()
        booking = await self._search.hold(
            request.case_id, request.counselor_id, start, request.replaces_booking_id
        )
        return pb.HoldSlotResponse(booking=booking_pb(booking))

    async def ConfirmBooking(
        self, request: pb.ConfirmBookingRequest, context: Context
    ) -> pb.ConfirmBookingResponse:
        booking = await self._bookings.confirm(request.booking_id)
        return pb.ConfirmBookingResponse(booking=booking_pb(booking))

    async def CancelBooking(
        self, request: pb.CancelBookingRequest, context: Context
    ) -> pb.CancelBookingResponse:
        booking = await self._bookings.cancel(request.booking_id, request.reason)
        return pb.CancelBookingResponse(booking=booking_pb(booking))

    async def RescheduleBooking(
        self, request: pb.RescheduleBookingRequest, context: Context
    ) -> pb.RescheduleBookingResponse:
        booking, previous = await self._bookings.reschedule(
            request.booking_id, request.new_booking_id
        )
        return pb.RescheduleBookingResponse(
            booking=booking_pb(booking), previous=booking_pb(previous)
        )

    async def CompleteSession(
        self, request: pb.CompleteSessionRequest, context: Context
    ) -> pb.CompleteSessionResponse:
        booking = await self._bookings.complete(request.booking_id, request.minutes)
        return pb.CompleteSessionResponse(booking=booking_pb(booking))

    async def SubmitMatchJob(
        self, request: pb.SubmitMatchJobRequest, context: Context
    ) -> pb.SubmitMatchJobResponse:
        job = await self._jobs.submit(job_request_from_pb(request))
        return pb.SubmitMatchJobResponse(job=job_pb(job))

    async def WatchMatchJob(
        self, request: pb.WatchMatchJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchMatchJobResponse]:
        async for job in self._jobs.watch(request.job_id):
            yield pb.WatchMatchJobResponse(job=job_pb(job))

    async def GetMatchResult(
        self, request: pb.GetMatchResultRequest, context: Context
    ) -> pb.GetMatchResultResponse:
        result = await self._jobs.result(request.job_id)
        return pb.GetMatchResultResponse(
            job=job_pb(result.job),
            sessions=[proposed_pb(s) for s in result.sessions],
            unserved=[
                pb.UnservedCase(case_id=case, missing=missing, reason=code, explanation=words)
                for case, missing, code, words in result.unserved
            ],
            crisis_sessions=result.crisis_sessions,
            sessions_without_what_if=result.job.sessions_without_what_if,
        )

    async def ApplyMatchResult(
        self, request: pb.ApplyMatchResultRequest, context: Context
    ) -> pb.ApplyMatchResultResponse:
        booked, refused, ids = await self._jobs.apply(request.job_id, request.dry_run)
        return pb.ApplyMatchResultResponse(
            booked=[proposed_pb(s) for s in booked],
            not_booked=[pb.NotBooked(session=proposed_pb(s), rule=rule) for s, rule in refused],
            booking_ids=ids,
        )

    async def ListGroupCandidates(
        self, request: pb.ListGroupCandidatesRequest, context: Context
    ) -> pb.ListGroupCandidatesResponse:
        checker = FieldChecker()
        checker.require(request.category in CATEGORIES, "category", "required")
        start = _required_moment(checker, request, "window_start", "window_start")
        end = _required_moment(checker, request, "window_end", "window_end")
        checker.raise_if_any()
        found = await self._availability.group_candidates(
            CATEGORIES[request.category], start, end, request.max_cases
        )
        return pb.ListGroupCandidatesResponse(
            candidates=[
                pb.GroupCandidate(
                    case_id=c.case.case_id,
                    employee_id=c.case.employee_id,
                    agency_id=c.case.agency_id,
                    minutes=c.case.minutes,
                    sessions_left=c.sessions_left,
                    availability=[
                        pb.TimeRange(start=timestamp(r.start), end=timestamp(r.end))
                        for r in c.availability
                    ],
                    booked_weeks=c.booked_weeks,
                    entitlement_minutes_left=(
                        -1 if c.entitlement_minutes_left is None else c.entitlement_minutes_left
                    ),
                    modalities=[_MODALITY_PB[m] for m in c.case.modalities],
                )
                for c in found
            ]
        )

    async def ListCounselorFreeTime(
        self, request: pb.ListCounselorFreeTimeRequest, context: Context
    ) -> pb.ListCounselorFreeTimeResponse:
        checker = FieldChecker()
        start = _required_moment(checker, request, "window_start", "window_start")
        end = _required_moment(checker, request, "window_end", "window_end")
        checker.raise_if_any()
        found = await self._availability.free_time(list(request.counselor_ids), start, end)
        return pb.ListCounselorFreeTimeResponse(
            counselors=[
                pb.CounselorFreeTime(
                    counselor_id=counselor_id,
                    free=[pb.TimeRange(start=timestamp(a), end=timestamp(b)) for a, b in free],
                )
                for counselor_id, free in found
            ]
        )

    async def BookGroupSession(
        self, request: pb.BookGroupSessionRequest, context: Context
    ) -> pb.BookGroupSessionResponse:
        result = await self._groups.book(
            GroupRequest(
                group_id=request.group_id,
                counselor_id=request.counselor_id,
                start=moment(request.start, "start") if request.HasField("start") else None,
                minutes=request.minutes,
                modality=MODALITIES.get(request.modality),
                case_ids=tuple(request.case_ids),
                min_participants=request.min_participants,
            )
        )
        return pb.BookGroupSessionResponse(
            group_id=result.group_id,
            bookings=[booking_pb(b) for b in result.bookings],
            refused=[
                pb.GroupRefusal(case_id=r.case_id, rule=r.rule, message=r.message)
                for r in result.refused
            ],
        )

    async def DiscloseCase(
        self, request: pb.DiscloseCaseRequest, context: Context
    ) -> pb.DiscloseCaseResponse:
        case, bookings = await self._cases.disclose(
            request.case_id,
            request.recipient,
            request.legal_reference,
            request.consent_reference,
        )
        return pb.DiscloseCaseResponse(
            case=case_pb(case), bookings=[booking_pb(b) for b in bookings]
        )

    async def ImportPeople(
        self, request: pb.ImportPeopleRequest, context: Context
    ) -> pb.ImportPeopleResponse:
        count = await self._staff.import_people(
            [StaffMember(p.employee_id, p.agency_id, p.staff_category) for p in request.people],
            replace_all=request.replace_all,
            dry_run=request.dry_run,
        )
        return pb.ImportPeopleResponse(
            added=count.added,
            changed=count.changed,
            removed=count.removed,
            unchanged=count.unchanged,
        )

    async def SetContact(
        self, request: pb.SetContactRequest, context: Context
    ) -> pb.SetContactResponse:
        given = request.contact
        await self._directory.set_contact(
            request.employee_id, Contact(given.name, given.phone, given.email)
        )
        return pb.SetContactResponse()

    async def GetContact(
        self, request: pb.GetContactRequest, context: Context
    ) -> pb.GetContactResponse:
        found = await self._directory.contact(request.employee_id)
        return pb.GetContactResponse(
            contact=pb.Contact(name=found.name, phone=found.phone, email=found.email)
        )

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        checker = FieldChecker()
        start = _required_moment(checker, request, "window_start", "window_start")
        end = _required_moment(checker, request, "window_end", "window_end")
        checker.raise_if_any()
        bookings = await self._availability.sessions(request.counselor_id, start, end)
        return pb.ListSessionsResponse(bookings=[booking_pb(b) for b in bookings])

    async def CancelGroupSession(
        self, request: pb.CancelGroupSessionRequest, context: Context
    ) -> pb.CancelGroupSessionResponse:
        bookings = await self._groups.cancel(request.group_id, request.reason)
        return pb.CancelGroupSessionResponse(bookings=[booking_pb(b) for b in bookings])
