"""The matcher's way to the quota service: reserve, commit and release the
hours and money a booking spends, over gRPC.

Refusals come back as the runtime's own errors, so a rule the quota service
names (AGENCY_BUDGET, PROVIDER_CAP, EMPLOYEE_ENTITLEMENT, WEEKLY_LIMIT, ...)
reaches the matcher's caller under the same name; an unreachable quota
service is UNAVAILABLE.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import grpc

from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc
from services.rules.attendance import Attendance, Charge
from services.rules.codes import RuleCode
from services.runtime.errors import FailedPrecondition, ServiceError
from services.runtime.fields import timestamp
from services.runtime.service_identity import ServiceCredentials
from services.runtime.status import from_call

_OUTCOMES = {
    Attendance.NO_SHOW: qpb.SESSION_OUTCOME_NO_SHOW,
    Attendance.LATE_CANCELLATION: qpb.SESSION_OUTCOME_LATE_CANCELLATION,
}
_CHARGES = {
    Charge.FULL: qpb.CHARGE_FULL,
    Charge.PROVIDER_PAID: qpb.CHARGE_PROVIDER_PAID,
    Charge.ENTITLEMENT_COUNTED: qpb.CHARGE_ENTITLEMENT_COUNTED,
    Charge.NONE: qpb.CHARGE_NONE,
}

CALL_SECONDS = 5.0


def pays_provider(hold: qpb.Hold) -> bool:
    """Whether the hold pays its provider: every session's does, but a
    missed one's whose charge spares the provider."""
    return hold.charge not in (qpb.CHARGE_ENTITLEMENT_COUNTED, qpb.CHARGE_NONE)


def _translated(error: grpc.aio.AioRpcError) -> ServiceError:
    return from_call(error, "quota")


class QuotaPort:
    """A gRPC client of the quota service, opened on first use (the address
    may only be known once this process's own server is listening)."""

    def __init__(self, address: Callable[[], str], credentials: ServiceCredentials) -> None:
        self._address = address
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._stub: quota_pb2_grpc.QuotaServiceAsyncStub | None = None

    def _quota(self) -> quota_pb2_grpc.QuotaServiceAsyncStub:
        channel = self._credentials.channel(self._address(), self._channel)
        if self._stub is None or channel is not self._channel:
            self._channel = channel
            self._stub = quota_pb2_grpc.QuotaServiceStub(channel)
        assert self._stub is not None
        return self._stub

    async def reserve(
        self,
        key: str,
        employee_id: str,
        agency_id: str,
        staff_category: str,
        provider_id: str,
        start: datetime,
        minutes: int,
        ttl_seconds: int,
        booking_ref: str,
        group: tuple[int, int] | None = None,
    ) -> str:
        """Holds the session's quota; returns the quota hold id. `group` is
        (size, index) for one participant's share of a group session."""
        request = qpb.ReserveRequest(
            idempotency_key=key,
            employee_id=employee_id,
            agency_id=agency_id,
            staff_category=staff_category,
            provider_id=provider_id,
            session_start=timestamp(start),
            minutes=minutes,
            hold_ttl_seconds=ttl_seconds,
            booking_ref=booking_ref,
            group=qpb.GroupShare(size=group[0], index=group[1]) if group else None,
        )
        try:
            response = await self._quota().Reserve(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        return response.hold.hold_id

    async def refusal(
        self,
        employee_id: str,
        agency_id: str,
        staff_category: str,
        provider_id: str,
        start: datetime,
        minutes: int,
    ) -> str | None:
        """The rule a reservation of this session would be refused by now
        (Reserve with validate_only: nothing is held), or None if it would
        pass. An agency the quota service does not know has no budget pool."""
        request = qpb.ReserveRequest(
            idempotency_key=f"check-{uuid.uuid4().hex}",
            employee_id=employee_id,
            agency_id=agency_id,
            staff_category=staff_category,
            provider_id=provider_id,
            session_start=timestamp(start),
            minutes=minutes,
            validate_only=True,
        )
        try:
            await self._quota().Reserve(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return RuleCode.NO_BUDGET_POOL.value
            refused = _translated(error)
            if isinstance(refused, FailedPrecondition):
                return refused.rule
            raise refused from None
        return None

    async def commit(self, hold_id: str, minutes: int = 0, completed: bool = False) -> None:
        await self._commit(qpb.CommitRequest(hold_id=hold_id, minutes=minutes, completed=completed))

    async def settle_missed(self, hold_id: str, outcome: Attendance, charge: Charge) -> None:
        """A booked session that did not take place (a no-show, a late
        cancellation), charged as the tenant's policy says."""
        await self._commit(
            qpb.CommitRequest(
                hold_id=hold_id, completed=True, outcome=_OUTCOMES[outcome], charge=_CHARGES[charge]
            )
        )

    async def _commit(self, request: qpb.CommitRequest) -> None:
        try:
            await self._quota().Commit(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None

    async def release(self, hold_id: str, reason: str, booking_cancelled: bool = False) -> None:
        """Gives back a hold; a booked one only with `booking_cancelled`."""
        request = qpb.ReleaseRequest(
            hold_id=hold_id, reason=reason, booking_cancelled=booking_cancelled
        )
        try:
            await self._quota().Release(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None

    async def move(
        self,
        hold_id: str,
        employee_id: str,
        provider_id: str,
        start: datetime,
        minutes: int,
        booking_ref: str,
    ) -> None:
        """Moves a booked hold to a new session, or refuses and changes nothing."""
        request = qpb.MoveRequest(
            hold_id=hold_id,
            employee_id=employee_id,
            provider_id=provider_id,
            session_start=timestamp(start),
            minutes=minutes,
            booking_ref=booking_ref,
        )
        try:
            await self._quota().Move(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None

    async def left(
        self, kind: qpb.AccountKind.ValueType, owner_id: str, fiscal_year: int
    ) -> int | None:
        """What an account has left, or None when it has not opened yet."""
        request = qpb.GetBalanceRequest(
            account=qpb.AccountRef(kind=kind, id=owner_id, fiscal_year=fiscal_year)
        )
        try:
            response = await self._quota().GetBalance(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _translated(error) from None
        return response.balance.left

    async def contract(self, provider_id: str, fiscal_year: int) -> tuple[int, int] | None:
        """The provider's hourly rate and cap minutes left, or None without
        a contract for the year."""
        request = qpb.GetProviderContractRequest(provider_id=provider_id, fiscal_year=fiscal_year)
        try:
            response = await self._quota().GetProviderContract(
                request, timeout=CALL_SECONDS, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _translated(error) from None
        return response.hourly_rate_ntd, response.balance.left

    async def charges(self, page_size: int = 5000) -> AsyncIterator[qpb.Hold]:
        """Every booked or completed quota hold, page by page (ListCharges)."""
        token = ""
        while True:
            request = qpb.ListChargesRequest(page_size=page_size, page_token=token)
            try:
                response = await self._quota().ListCharges(
                    request, timeout=CALL_SECONDS * 6, metadata=self._credentials.metadata()
                )
            except grpc.aio.AioRpcError as error:
                raise _translated(error) from None
            for hold in response.holds:
                yield hold
            token = response.next_page_token
            if not token:
                return

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
