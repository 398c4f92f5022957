"""gRPC translation of a booking's life after its hold: confirming,
cancelling (and who cancels), rescheduling, completing (and what became of
the session), and the tenant's booking policy (booking/tenant_policy.py)."""

from __future__ import annotations

from typing import Any

from grpc import aio

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.booking.cancellation import CancelledBy, who_cancels
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.tenant_policy import BookingPolicies, BookingPolicy
from services.matcher.messages import booking_pb
from services.rules.attendance import Attendance, Charge
from services.runtime.errors import InvalidArgument

Context = aio.ServicerContext[Any, Any]

# What CompleteSession may record.
_OUTCOMES: dict[int, Attendance] = {
    pb.ATTENDANCE_UNSPECIFIED: Attendance.ATTENDED,
    pb.ATTENDANCE_ATTENDED: Attendance.ATTENDED,
    pb.ATTENDANCE_NO_SHOW: Attendance.NO_SHOW,
    pb.ATTENDANCE_LATE_CANCELLATION: Attendance.LATE_CANCELLATION,
}
_CANCELLED_BY: dict[int, CancelledBy | None] = {
    pb.CANCELLED_BY_UNSPECIFIED: None,
    pb.CANCELLED_BY_EMPLOYEE: CancelledBy.EMPLOYEE,
    pb.CANCELLED_BY_COUNSELOR: CancelledBy.COUNSELOR,
}
_CHARGES: dict[int, Charge] = {
    pb.CHARGE_FULL: Charge.FULL,
    pb.CHARGE_PROVIDER_PAID: Charge.PROVIDER_PAID,
    pb.CHARGE_ENTITLEMENT_COUNTED: Charge.ENTITLEMENT_COUNTED,
    pb.CHARGE_NONE: Charge.NONE,
}
_CHARGE_PB: dict[Charge, pb.Charge.ValueType] = {
    charge: pb.Charge.ValueType(value) for value, charge in _CHARGES.items()
}


def outcome_from_pb(value: int) -> Attendance:
    outcome = _OUTCOMES.get(value)
    if outcome is None:
        raise InvalidArgument.single("outcome", "attended, no-show or late cancellation")
    return outcome


def cancelled_by_from_pb(value: int) -> CancelledBy | None:
    if value not in _CANCELLED_BY:
        raise InvalidArgument.single("cancelled_by", "employee or counselor")
    return _CANCELLED_BY[value]


def policy_pb(policy: BookingPolicy) -> pb.BookingPolicy:
    return pb.BookingPolicy(
        notice_hours=policy.notice_hours,
        late_cancellation_charge=_CHARGE_PB[policy.late_cancellation_charge],
        no_show_charge=_CHARGE_PB[policy.no_show_charge],
        reminder_hours=list(policy.reminder_hours or ()),
        use_default_reminders=policy.reminder_hours is None,
    )


def policy_from_pb(message: pb.BookingPolicy) -> BookingPolicy:
    """The policy, or INVALID_ARGUMENT naming each field out of bounds."""
    return BookingPolicy.checked(
        message.notice_hours,
        _CHARGES.get(message.late_cancellation_charge),
        _CHARGES.get(message.no_show_charge),
        None if message.use_default_reminders else list(message.reminder_hours),
    )


class BookingRpcs:
    """These MatcherService RPCs (MatcherServicer inherits them)."""

    _bookings: BookingSaga
    _policies: BookingPolicies

    async def ConfirmBooking(
        self, request: pb.ConfirmBookingRequest, context: Context
    ) -> pb.ConfirmBookingResponse:
        booking = await self._bookings.confirm(request.booking_id)
        return pb.ConfirmBookingResponse(booking=booking_pb(booking))

    async def CancelBooking(
        self, request: pb.CancelBookingRequest, context: Context
    ) -> pb.CancelBookingResponse:
        booking = await self._bookings.cancel(
            request.booking_id,
            request.reason,
            who_cancels(cancelled_by_from_pb(request.cancelled_by)),
        )
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
        booking = await self._bookings.complete(
            request.booking_id, request.minutes, outcome_from_pb(request.outcome)
        )
        return pb.CompleteSessionResponse(booking=booking_pb(booking))

    async def GetBookingPolicy(
        self, request: pb.GetBookingPolicyRequest, context: Context
    ) -> pb.GetBookingPolicyResponse:
        return pb.GetBookingPolicyResponse(policy=policy_pb(await self._policies.get()))

    async def SetBookingPolicy(
        self, request: pb.SetBookingPolicyRequest, context: Context
    ) -> pb.SetBookingPolicyResponse:
        policy = await self._policies.set(policy_from_pb(request.policy))
        return pb.SetBookingPolicyResponse(policy=policy_pb(policy))
