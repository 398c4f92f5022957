"""CompleteSession over gRPC (issue 15, item 4): a session that has not
started cannot be recorded as having taken place."""

from __future__ import annotations

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from tests.conftest import Suite, during
from tests.county import RATE
from tests.matcher.test_booking import agency, book, case, rule, slots, submit
from tests.quota.test_rpcs import details, refused


async def test_a_future_session_is_not_completable(suite: Suite) -> None:
    await submit(suite, case())
    booking = await book(suite, (await slots(suite))[0])
    request = pb.CompleteSessionRequest(booking_id=booking.booking_id)
    before = await agency(suite)
    early = await refused(suite.matcher.CompleteSession(request))
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(early) == "SESSION_NOT_STARTED"
    words = details(early)["LocalizedMessage"]
    assert words.locale == "zh-TW"  # type: ignore[attr-defined]
    assert words.message == "此諮商尚未開始：開始之後才能登記為已完成。"  # type: ignore[attr-defined]
    # A minute before its start, still not; the booking and its charge stand.
    with during(booking.start, minutes=-1):
        again = await refused(suite.matcher.CompleteSession(request))
        assert rule(again) == "SESSION_NOT_STARTED"
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id=booking.case_id))
    assert [b.state for b in got.bookings] == [pb.BOOKING_STATE_BOOKED]
    assert await agency(suite) == before
    # Once it has begun, it can be.
    with during(booking.start, minutes=0):
        done = await suite.matcher.CompleteSession(request)
    assert done.booking.state == pb.BOOKING_STATE_COMPLETED
    assert (await agency(suite)).spent == RATE
