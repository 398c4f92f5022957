"""The calendar's way to the matcher: the open cases that accept a group
session and the counselors' free time, over gRPC. Refusals come back as
the runtime's own errors; an unreachable matcher is UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from services.calendar.group_sessions import GroupCandidate, Leader
from services.calendar.local_time import from_stamp, to_stamp
from services.calendar.program import Span
from services.runtime.errors import InvalidArgument, NotFound, ServiceError, Unavailable

CALL_SECONDS = 10.0
# An unopened entitlement account is the policy's full entitlement, which
# the quota service will check at booking; the proposal treats it as room.
UNOPENED_MINUTES = 10**9


def _span(given: mpb.TimeRange) -> Span:
    return Span(from_stamp(given.start), from_stamp(given.end))


def _translated(error: grpc.aio.AioRpcError) -> ServiceError:
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"matcher: {error.details()}")
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument.single("matcher", error.details() or "refused by the matcher")
    return Unavailable("the matcher did not answer; retry later")


class MatcherPort:
    """A gRPC client of the matcher, opened on first use."""

    def __init__(self, address: Callable[[], str]) -> None:
        self._address = address
        self._stub: matcher_pb2_grpc.MatcherServiceAsyncStub | None = None

    def _matcher(self) -> matcher_pb2_grpc.MatcherServiceAsyncStub:
        if self._stub is None:
            channel = grpc.aio.insecure_channel(self._address())
            self._stub = matcher_pb2_grpc.MatcherServiceStub(channel)
        assert self._stub is not None
        return self._stub

    async def group_candidates(
        self, category: int, start: datetime, end: datetime
    ) -> list[GroupCandidate]:
        request = mpb.ListGroupCandidatesRequest(
            category=category,  # type: ignore[arg-type]
            window_start=to_stamp(start),
            window_end=to_stamp(end),
        )
        try:
            answer = await self._matcher().ListGroupCandidates(request, timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        return [
            GroupCandidate(
                c.case_id,
                c.employee_id,
                tuple(_span(r) for r in c.availability),
                frozenset((int(w[:4]), int(w.split("-W")[1])) for w in c.booked_weeks),
                UNOPENED_MINUTES
                if c.entitlement_minutes_left < 0
                else int(c.entitlement_minutes_left),
            )
            for c in answer.candidates
        ]

    async def free_time(
        self, counselor_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Leader]:
        request = mpb.ListCounselorFreeTimeRequest(
            counselor_ids=list(counselor_ids),
            window_start=to_stamp(start),
            window_end=to_stamp(end),
        )
        try:
            answer = await self._matcher().ListCounselorFreeTime(request, timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        return [
            Leader(
                c.counselor_id, tuple(Span(from_stamp(r.start), from_stamp(r.end)) for r in c.free)
            )
            for c in answer.counselors
        ]
