"""The calendar's way to the matcher: the open cases that accept a group
session, the counselors' free time, and booking group sessions, over gRPC. Refusals come back as
the runtime's own errors; an unreachable matcher is UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from services.calendar.group_sessions import GroupCandidate, GroupProposal, Leader
from services.calendar.local_time import from_stamp, to_stamp
from services.calendar.program import Span
from services.runtime.errors import ServiceError
from services.runtime.service_identity import ServiceCredentials
from services.runtime.status import from_call

CALL_SECONDS = 10.0
# An unopened entitlement account is the policy's full entitlement, which
# the quota service will check at booking; the proposal treats it as room.
UNOPENED_MINUTES = 10**9


def _span(given: mpb.TimeRange) -> Span:
    return Span(from_stamp(given.start), from_stamp(given.end))


def _translated(error: grpc.aio.AioRpcError) -> ServiceError:
    return from_call(error, "matcher")


def _modality_name(value: int) -> str:
    return mpb.Modality.Name(value).removeprefix("MODALITY_").lower()  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupBooking:
    """A group session as the matcher booked it."""

    case_ids: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (case id, rule)


class MatcherPort:
    """A gRPC client of the matcher, opened on first use."""

    def __init__(self, address: Callable[[], str], credentials: ServiceCredentials) -> None:
        self._address = address
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._stub: matcher_pb2_grpc.MatcherServiceAsyncStub | None = None

    def _matcher(self) -> matcher_pb2_grpc.MatcherServiceAsyncStub:
        channel = self._credentials.channel(self._address(), self._channel)
        if self._stub is None or channel is not self._channel:
            self._channel = channel
            self._stub = matcher_pb2_grpc.MatcherServiceStub(channel)
        assert self._stub is not None
        return self._stub

    async def close(self) -> None:
        """Closes the channel; calls still in flight end CANCELLED. (Left
        open, its tasks outlived the event loop and hung its shutdown.)"""
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = self._stub = None

    async def group_candidates(
        self, category: int, start: datetime, end: datetime
    ) -> list[GroupCandidate]:
        request = mpb.ListGroupCandidatesRequest(
            category=category,  # type: ignore[arg-type]
            window_start=to_stamp(start),
            window_end=to_stamp(end),
        )
        try:
            answer = await self._matcher().ListGroupCandidates(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
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
                frozenset(_modality_name(m) for m in c.modalities),
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
            answer = await self._matcher().ListCounselorFreeTime(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        return [
            Leader(
                c.counselor_id, tuple(Span(from_stamp(r.start), from_stamp(r.end)) for r in c.free)
            )
            for c in answer.counselors
        ]

    async def book_group(
        self, group_id: str, session: GroupProposal, modality: int, min_size: int
    ) -> GroupBooking:
        """Books the session; FailedPrecondition names the rule when the
        matcher refuses it as a whole."""
        request = mpb.BookGroupSessionRequest(
            group_id=group_id,
            counselor_id=session.counselor_id,
            start=to_stamp(session.start),
            minutes=int((session.end - session.start).total_seconds() // 60),
            modality=modality,  # type: ignore[arg-type]
            case_ids=list(session.case_ids),
            min_participants=min_size,
        )
        try:
            answer = await self._matcher().BookGroupSession(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        return GroupBooking(
            tuple(b.case_id for b in answer.bookings),
            tuple((r.case_id, r.rule) for r in answer.refused),
        )
