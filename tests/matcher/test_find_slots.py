"""FindSlots as a frontend uses it (issue 15, item 4), over gRPC: slots to
reschedule to."""

from __future__ import annotations

import datetime as dt

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from tests.conftest import MONDAY, Suite, at
from tests.matcher.test_booking import book, case, local, submit
from tests.quota.test_rpcs import details, refused


def window(case_id: str, days: int = 14, **more: object) -> pb.FindSlotsRequest:
    return pb.FindSlotsRequest(
        case_id=case_id,
        window_start=at(MONDAY, 0),
        window_end=at(MONDAY + dt.timedelta(days=days), 0),
        max_slots=200,
        **more,  # type: ignore[arg-type]
    )


async def test_a_booked_session_counts_as_free_when_rescheduling_it(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=1))
    first = (await suite.matcher.FindSlots(window("K1"))).slots
    booked = await book(suite, first[0], "K1")
    # Fully booked: nothing more to offer, unless the booking is to move.
    assert not (await suite.matcher.FindSlots(window("K1"))).slots
    moving = (
        await suite.matcher.FindSlots(window("K1", replaces_booking_id=booked.booking_id))
    ).slots
    assert moving
    # Its own week is free again (it is the one the move gives up) and so is its time.
    weeks = {local(s.start).isocalendar()[1] for s in moving}
    assert local(booked.start).isocalendar()[1] in weeks
    assert any(s.start == booked.start and s.counselor_id == booked.counselor_id for s in moving)
    # What FindSlots offers, HoldSlot and RescheduleBooking take.
    target = next(s for s in moving if s.start != booked.start)
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(
            case_id="K1",
            counselor_id=target.counselor_id,
            start=target.start,
            replaces_booking_id=booked.booking_id,
        )
    )
    moved = await suite.matcher.RescheduleBooking(
        pb.RescheduleBookingRequest(
            booking_id=booked.booking_id, new_booking_id=held.booking.booking_id
        )
    )
    assert moved.booking.state == pb.BOOKING_STATE_BOOKED
    assert moved.booking.start == target.start


async def test_only_a_booked_session_of_the_same_case_can_be_replaced(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=1))
    await submit(suite, case("K2", "E2", sessions_wanted=1))
    theirs = await book(suite, (await suite.matcher.FindSlots(window("K2"))).slots[0], "K2")
    error = await refused(
        suite.matcher.FindSlots(window("K1", replaces_booking_id=theirs.booking_id))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["replaces_booking_id"]
    unknown = suite.matcher.FindSlots(window("K1", replaces_booking_id="nope"))
    assert (await refused(unknown)).code() == grpc.StatusCode.NOT_FOUND
