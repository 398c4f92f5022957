"""gRPC translation of the waitlist (booking/waitlist.py): joining,
leaving, the line; and accepting or declining an offer, which are
ConfirmBooking and CancelBooking of the offered hold, after which the entry
follows its booking at once (the offering pass would within a pass)."""

from __future__ import annotations

from typing import Any

from grpc import aio

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.booking.offers import EVERY_SLOT
from services.matcher.booking.search import LONGEST_WINDOW
from services.matcher.booking.waitlist import Waitlist
from services.matcher.booking.waitlist_offers import Offering
from services.matcher.booking.waitlist_state import EntryState
from services.matcher.booking.waitlist_views import EntryView, Wants
from services.matcher.booking_rpcs import BookingRpcs
from services.matcher.messages import MODALITY_PB, slot_filter_from_pb
from services.runtime import clock, paging
from services.runtime.auth import Role, current_identity
from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.fields import FieldChecker, timestamp

Context = aio.ServicerContext[Any, Any]

_STATE_PB: dict[EntryState, pb.WaitlistEntryState.ValueType] = {
    EntryState.WAITING: pb.WAITLIST_ENTRY_STATE_WAITING,
    EntryState.OFFERED: pb.WAITLIST_ENTRY_STATE_OFFERED,
    EntryState.BOOKED: pb.WAITLIST_ENTRY_STATE_BOOKED,
    EntryState.LEFT: pb.WAITLIST_ENTRY_STATE_LEFT,
    EntryState.LAPSED: pb.WAITLIST_ENTRY_STATE_LAPSED,
}


def wants_from_pb(message: pb.WaitlistWishes, checker: FieldChecker) -> Wants:
    """The wishes, their violations noted on `checker` (the caller refuses
    once, naming every bad field of the request)."""
    now = clock.now()
    start = now
    if message.HasField("window_start"):
        start = checker.moment(message.window_start, "wishes.window_start")
    end = start + LONGEST_WINDOW
    if message.HasField("window_end"):
        end = checker.moment(message.window_end, "wishes.window_end")
    narrowing = EVERY_SLOT
    try:
        narrowing = slot_filter_from_pb(message)
    except InvalidArgument as bad:
        checker.violations += [
            FieldViolation(f"wishes.{v.field}", v.description) for v in bad.violations
        ]
    wants = Wants(
        start,
        end,
        narrowing.modalities,
        message.counselor_id,
        narrowing.earliest,
        narrowing.latest,
        narrowing.languages,
    )
    wants.check(checker, now)
    return wants


def wishes_pb(wants: Wants) -> pb.WaitlistWishes:
    return pb.WaitlistWishes(
        window_start=timestamp(wants.window_start),
        window_end=timestamp(wants.window_end),
        modalities=[MODALITY_PB[m] for m in wants.modalities],
        counselor_id=wants.counselor_id,
        earliest_start_time=wants.earliest.strftime("%H:%M") if wants.earliest else "",
        latest_start_time=wants.latest.strftime("%H:%M") if wants.latest else "",
        languages=list(wants.languages),
    )


def entry_pb(entry: EntryView) -> pb.WaitlistEntry:
    message = pb.WaitlistEntry(
        entry_id=entry.entry_id,
        case_id=entry.case_id,
        state=_STATE_PB[entry.state],
        crisis=entry.crisis,
        requeued=entry.requeued,
        wishes=wishes_pb(entry.wants),
        waiting_since=timestamp(entry.waiting_since),
        position=entry.position,
        offer_booking_id=entry.offer_booking_id,
        lapses=entry.lapses,
    )
    if entry.offer_expires_at is not None:
        message.offer_expires_at.CopyFrom(timestamp(entry.offer_expires_at))
    return message


class WaitlistRpcs(BookingRpcs):
    """These MatcherService RPCs, and the booking ones (booking_rpcs.py)
    with an offer's entry following its booking (MatcherServicer inherits
    them)."""

    _waitlist: Waitlist
    _offering: Offering

    async def JoinWaitlist(
        self, request: pb.JoinWaitlistRequest, context: Context
    ) -> pb.JoinWaitlistResponse:
        checker = FieldChecker()
        checker.idempotency_key(request.request_id, "request_id")
        wants = wants_from_pb(request.wishes, checker)
        checker.raise_if_any()
        entry, created = await self._waitlist.join(request.case_id, request.request_id, wants)
        return pb.JoinWaitlistResponse(entry=entry_pb(entry), created=created)

    async def LeaveWaitlist(
        self, request: pb.LeaveWaitlistRequest, context: Context
    ) -> pb.LeaveWaitlistResponse:
        return pb.LeaveWaitlistResponse(
            entry=entry_pb(await self._waitlist.leave(request.entry_id))
        )

    async def ListWaitlist(
        self, request: pb.ListWaitlistRequest, context: Context
    ) -> pb.ListWaitlistResponse:
        size = paging.page_size(request.page_size, 20, 100)
        key = paging.after(request.page_token)
        if key is not None and not key.isdigit():
            raise InvalidArgument.single("page_token", "not a token this service gave")
        after = int(key or 0)
        entries = await self._waitlist.line(
            request.employee_id, after, size + 1, request.include_ended
        )
        page = entries[:size]
        return pb.ListWaitlistResponse(
            entries=[entry_pb(e) for e in page],
            next_page_token=paging.page_token(after + size) if len(entries) > size else "",
        )

    async def ConfirmBooking(
        self, request: pb.ConfirmBookingRequest, context: Context
    ) -> pb.ConfirmBookingResponse:
        response = await super().ConfirmBooking(request, context)
        await self._offering.follow_booking(request.booking_id)  # an offer accepted
        return response

    async def CancelBooking(
        self, request: pb.CancelBookingRequest, context: Context
    ) -> pb.CancelBookingResponse:
        response = await super().CancelBooking(request, context)
        await self._offering.follow_booking(request.booking_id)  # an offer declined
        return response

    async def _waitlist_entry(self, case_id: str) -> pb.WaitlistEntry | None:
        """GetCase's view of the case's place in line: for its employee and
        administrators; a counselor reading a case of theirs sees none."""
        if current_identity().role is Role.COUNSELOR:
            return None
        entry = await self._waitlist.of_case(case_id)
        return entry_pb(entry) if entry else None
