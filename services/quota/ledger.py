"""The hold use cases: reserve, commit, move and release, checked here and
applied by the hold queue (holds/); and the sweep of holds past their TTL.

The gRPC servicer calls these with plain commands and gets plain results;
nothing here knows about gRPC.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.quota import metrics
from services.quota.domain import (
    MAX_HOLD_TTL_SECONDS,
    AccountKey,
    check_session_minutes,
    check_share,
)
from services.quota.holds.queue import HoldBatcher
from services.quota.holds.requests import (
    CommitOp,
    HoldView,
    MoveOp,
    ReleaseOp,
    Reservation,
    ReserveOp,
)
from services.quota.reference import ReferenceData
from services.quota.store import request_fingerprint
from services.rules.attendance import Attendance, Charge
from services.rules.codes import RuleCode
from services.rules.cost import Share
from services.rules.sessions import MAX_SESSION_MINUTES
from services.runtime.errors import (
    FailedPrecondition,
)
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.quota")


@dataclass(frozen=True)
class ReserveCommand:
    idempotency_key: str
    employee_id: str
    agency_id: str
    staff_category: str
    provider_id: str
    session_start: datetime | None
    minutes: int
    hold_ttl_seconds: int = 0
    booking_ref: str = ""
    share: Share | None = None  # a group session's share; None for an individual one
    validate_only: bool = False  # the answer, nothing held


class QuotaLedger:
    def __init__(
        self,
        engine: AsyncEngine,
        default_hold_ttl_seconds: int = 900,
        max_queue_seconds: float = 1.0,
    ) -> None:
        self._batcher = HoldBatcher(engine, default_hold_ttl_seconds, max_queue_seconds)

    @property
    def reference(self) -> ReferenceData:
        """The contracts, agencies and policies the queue caches; cleared when they change."""
        return self._batcher.reference

    async def close(self) -> None:
        await self._batcher.close()

    async def reserve(self, command: ReserveCommand, actor: str) -> Reservation:
        checker = FieldChecker()
        checker.idempotency_key(command.idempotency_key, "idempotency_key")
        checker.identifier(command.employee_id, "employee_id")
        checker.identifier(command.agency_id, "agency_id")
        checker.identifier(command.staff_category, "staff_category")
        checker.identifier(command.provider_id, "provider_id")
        checker.require(command.session_start is not None, "session_start", "required")
        check_session_minutes(checker, command.minutes, "minutes")
        checker.require(
            0 <= command.hold_ttl_seconds <= MAX_HOLD_TTL_SECONDS,
            "hold_ttl_seconds",
            f"0 (the default) to {MAX_HOLD_TTL_SECONDS} seconds",
        )
        checker.text(command.booking_ref, "booking_ref", 128)
        if command.share is not None:
            check_share(checker, command.share, "group")
        checker.raise_if_any()
        assert command.session_start is not None
        fingerprint = request_fingerprint(command)

        def submit() -> Awaitable[Reservation]:
            assert command.session_start is not None
            return self._batcher.submit(
                ReserveOp(
                    actor=actor,
                    future=self._batcher.new_future(),
                    idempotency_key=command.idempotency_key,
                    fingerprint=fingerprint,
                    employee_id=command.employee_id,
                    agency_id=command.agency_id,
                    staff_category=command.staff_category,
                    provider_id=command.provider_id,
                    session_start=command.session_start,
                    minutes=command.minutes,
                    ttl_seconds=command.hold_ttl_seconds,
                    booking_ref=command.booking_ref,
                    share=command.share or Share(),
                    validate_only=command.validate_only,
                )
            )

        try:
            result: Reservation = await submit()
        except FailedPrecondition as refusal:
            # Holds past their TTL that the sweeper has not reached yet would
            # refuse this request unfairly: give them back, then try again.
            keys = ReserveOp.keys_of(
                command.employee_id, command.provider_id, command.agency_id, command.session_start
            )
            if refusal.rule not in _LIMIT_RULES or not await self._expire(keys):
                raise
            result = await submit()
        return result

    async def commit(
        self,
        hold_id: str,
        minutes: int,
        completed: bool,
        actor: str,
        outcome: Attendance = Attendance.ATTENDED,
        charge: Charge | None = None,
    ) -> HoldView:
        """Commits the hold: a booking confirmed, or (`completed`) a session
        that took place; or one that did not (`outcome`, a no-show or a late
        cancellation), settled as `charge` says."""
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.require(
            minutes == 0 or 1 <= minutes <= MAX_SESSION_MINUTES,
            "minutes",
            f"0 (all held minutes) or 1-{MAX_SESSION_MINUTES}",
        )
        missed = outcome in (Attendance.NO_SHOW, Attendance.LATE_CANCELLATION)
        which = "a no-show or late cancellation"
        checker.require(outcome is Attendance.ATTENDED or missed, "outcome", f"attended or {which}")
        checker.require(not missed or completed, "completed", f"true with {which}")
        checker.require(not missed or minutes == 0, "minutes", f"0 with {which}")
        checker.require((charge is not None) == missed, "charge", f"set with {which} only")
        checker.raise_if_any()
        hold: HoldView = await self._batcher.submit(
            CommitOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                minutes=minutes,
                completed=completed,
                outcome=outcome,
                charge=charge or Charge.FULL,
            )
        )
        return hold

    async def move(
        self,
        hold_id: str,
        employee_id: str,
        provider_id: str,
        session_start: datetime | None,
        minutes: int,
        booking_ref: str,
        actor: str,
    ) -> HoldView:
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.identifier(employee_id, "employee_id")
        checker.identifier(provider_id, "provider_id")
        checker.require(session_start is not None, "session_start", "required")
        check_session_minutes(checker, minutes, "minutes")
        checker.text(booking_ref, "booking_ref", 128)
        checker.raise_if_any()
        assert session_start is not None
        hold: HoldView = await self._batcher.submit(
            MoveOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                employee_id=employee_id,
                provider_id=provider_id,
                session_start=session_start,
                minutes=minutes,
                booking_ref=booking_ref,
            )
        )
        return hold

    async def release(
        self, hold_id: str, reason: str, actor: str, booking_cancelled: bool = False
    ) -> HoldView:
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.text(reason, "reason")
        checker.raise_if_any()
        hold: HoldView = await self._batcher.submit(
            ReleaseOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                reason=reason,
                booking_cancelled=booking_cancelled,
            )
        )
        return hold

    async def expire_due(self, limit: int = 200) -> int:
        """Gives back holds past their TTL; returns how many. Safe on many replicas."""
        expired = await self._batcher.expire_due(limit)
        metrics.HOLDS_EXPIRED.inc(expired)
        return expired

    async def _expire(self, accounts: Sequence[AccountKey]) -> int:
        """Gives back the due holds on these accounts; returns how many."""
        expired = await self._batcher.expire_due(1000, accounts)
        metrics.HOLDS_EXPIRED.inc(expired)
        return expired


_LIMIT_RULES = frozenset(
    {
        RuleCode.WEEKLY_LIMIT,
        RuleCode.EMPLOYEE_ENTITLEMENT,
        RuleCode.PROVIDER_CAP,
        RuleCode.AGENCY_BUDGET,
    }
)
