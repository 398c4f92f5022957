"""gRPC translation for the matcher service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.booking.availability import Availability
from services.matcher.booking.changes import CaseChanges
from services.matcher.booking.groups import GroupBookings, GroupRequest
from services.matcher.booking.records import CaseRecords
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.search import SlotSearch
from services.matcher.booking.tenant_policy import BookingPolicies
from services.matcher.booking.waitlist import Waitlist
from services.matcher.booking.waitlist_offers import Offering
from services.matcher.messages import (
    CATEGORIES,
    MAX_SLOTS,
    MODALITIES,
    MODALITY_PB,
    booking_pb,
    case_changes_from_pb,
    case_from_pb,
    case_pb,
    counselor_from_pb,
    counselor_pb,
    job_pb,
    job_request_from_pb,
    move_pb,
    no_slot_reason_pb,
    proposed_pb,
    required_moment,
    slot_filter_from_pb,
    slot_pb,
)
from services.matcher.optimization.jobs import Jobs
from services.matcher.registry.directory import Contact, Directory
from services.matcher.registry.staff import StaffDirectory, StaffMember
from services.matcher.registry.store import CounselorRegistry
from services.matcher.review.rpcs import ReviewRpcs
from services.matcher.survey.answering import Survey
from services.matcher.survey.rpcs import SurveyRpcs
from services.matcher.waitlist_rpcs import WaitlistRpcs
from services.runtime import paging, policy
from services.runtime.errors import InvalidArgument
from services.runtime.fields import FieldChecker, moment, timestamp
from services.runtime.policy import Scope

Context = aio.ServicerContext[Any, Any]


class MatcherServicer(
    WaitlistRpcs, ReviewRpcs, SurveyRpcs, matcher_pb2_grpc.MatcherServiceServicer
):
    def __init__(
        self,
        *,
        registry: CounselorRegistry,
        directory: Directory,
        cases: CaseRecords,
        changes: CaseChanges,
        search: SlotSearch,
        availability: Availability,
        bookings: BookingSaga,
        groups: GroupBookings,
        jobs: Jobs,
        staff: StaffDirectory,
        policies: BookingPolicies,
        engine: AsyncEngine,
        waitlist: Waitlist,
        offering: Offering,
        survey: Survey,
    ) -> None:
        self._survey = survey
        self._waitlist = waitlist
        self._offering = offering
        self._review_engine = engine
        self._staff = staff
        self._policies = policies
        self._registry = registry
        self._directory = directory
        self._cases = cases
        self._changes = changes
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
        return pb.GetCaseResponse(
            case=case_pb(case),
            bookings=[booking_pb(b) for b in bookings],
            waitlist_entry=await self._waitlist_entry(case.case_id),
        )

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

    async def UpdateCase(
        self, request: pb.UpdateCaseRequest, context: Context
    ) -> pb.UpdateCaseResponse:
        case = await self._changes.update(request.case.case_id, case_changes_from_pb(request))
        return pb.UpdateCaseResponse(case=case_pb(case))

    async def WithdrawCase(
        self, request: pb.WithdrawCaseRequest, context: Context
    ) -> pb.WithdrawCaseResponse:
        case, bookings = await self._changes.withdraw(request.case_id, request.reason)
        return pb.WithdrawCaseResponse(
            case=case_pb(case), bookings=[booking_pb(b) for b in bookings]
        )

    async def FindSlots(
        self, request: pb.FindSlotsRequest, context: Context
    ) -> pb.FindSlotsResponse:
        checker = FieldChecker()
        checker.require(0 <= request.max_slots <= MAX_SLOTS, "max_slots", f"0 to {MAX_SLOTS}")
        checker.raise_if_any()
        size = paging.page_size(request.page_size, request.max_slots or 20, MAX_SLOTS)
        key = paging.after(request.page_token)
        if key is not None and not key.isdigit():
            raise InvalidArgument.single("page_token", "not a token this service gave")
        found = await self._search.find_slots(
            request.case_id,
            moment(request.window_start, "window_start")
            if request.HasField("window_start")
            else None,
            moment(request.window_end, "window_end") if request.HasField("window_end") else None,
            (int(key or 0), size),
            request.replaces_booking_id,
            slot_filter_from_pb(request),
        )
        return pb.FindSlotsResponse(
            slots=[slot_pb(o) for o in found.offers],
            next_page_token=paging.page_token(found.next_offset)
            if found.next_offset is not None
            else "",
            none_because=[no_slot_reason_pb(rule) for rule in found.none_because],
        )

    async def HoldSlot(self, request: pb.HoldSlotRequest, context: Context) -> pb.HoldSlotResponse:
        checker = FieldChecker()
        start = required_moment(checker, request, "start", "start")
        checker.raise_if_any()
        booking = await self._search.hold(
            request.case_id, request.counselor_id, start, request.replaces_booking_id
        )
        return pb.HoldSlotResponse(booking=booking_pb(booking))

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
            moves=[move_pb(m) for m in result.moves],
        )

    async def ApplyMatchResult(
        self, request: pb.ApplyMatchResultRequest, context: Context
    ) -> pb.ApplyMatchResultResponse:
        done = await self._jobs.apply(request.job_id, request.dry_run)
        return pb.ApplyMatchResultResponse(
            booked=[proposed_pb(s) for s in done.booked],
            not_booked=[
                pb.NotBooked(session=proposed_pb(s), rule=rule) for s, rule in done.refused
            ],
            booking_ids=done.booking_ids,
            moved=[move_pb(m) for m in done.moved],
            not_moved=[pb.NotMoved(move=move_pb(m), rule=rule) for m, rule in done.not_moved],
        )

    async def ListGroupCandidates(
        self, request: pb.ListGroupCandidatesRequest, context: Context
    ) -> pb.ListGroupCandidatesResponse:
        checker = FieldChecker()
        checker.require(request.category in CATEGORIES, "category", "required")
        start = required_moment(checker, request, "window_start", "window_start")
        end = required_moment(checker, request, "window_end", "window_end")
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
                    modalities=[MODALITY_PB[m] for m in c.case.modalities],
                )
                for c in found
            ]
        )

    async def ListCounselorFreeTime(
        self, request: pb.ListCounselorFreeTimeRequest, context: Context
    ) -> pb.ListCounselorFreeTimeResponse:
        checker = FieldChecker()
        start = required_moment(checker, request, "window_start", "window_start")
        end = required_moment(checker, request, "window_end", "window_end")
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
        start = required_moment(checker, request, "window_start", "window_start")
        end = required_moment(checker, request, "window_end", "window_end")
        checker.raise_if_any()
        bookings = await self._availability.sessions(request.counselor_id, start, end)
        return pb.ListSessionsResponse(bookings=[booking_pb(b) for b in bookings])

    async def CancelGroupSession(
        self, request: pb.CancelGroupSessionRequest, context: Context
    ) -> pb.CancelGroupSessionResponse:
        bookings = await self._groups.cancel(request.group_id, request.reason)
        return pb.CancelGroupSessionResponse(bookings=[booking_pb(b) for b in bookings])
