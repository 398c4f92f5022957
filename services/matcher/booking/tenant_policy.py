"""A tenant's booking policy: how long before a session it can be
cancelled without charge, what a late cancellation and a no-show are
charged, and when reminders go out. One row in the tenant's database, or
none for the defaults (rules/attendance.py; the reminders the deployment
sets in EAP_REMINDER_HOURS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher.orm import BookingPolicyRow
from services.rules.attendance import (
    LATE_CANCELLATION_CHARGE,
    MAX_NOTICE_HOURS,
    NO_SHOW_CHARGE,
    NOTICE_HOURS,
    Attendance,
    Charge,
    notice_hours_ok,
)
from services.runtime import clock
from services.runtime.config import MAX_REMINDER_HOURS
from services.runtime.fields import FieldChecker

_ROW = "tenant"  # the one row's key
MAX_REMINDERS = 4


@dataclass(frozen=True)
class BookingPolicy:
    notice_hours: int = NOTICE_HOURS
    late_cancellation_charge: Charge = LATE_CANCELLATION_CHARGE
    no_show_charge: Charge = NO_SHOW_CHARGE
    # Hours before a session that reminders go out; None: the deployment's.
    reminder_hours: tuple[float, ...] | None = None

    def charge_for(self, outcome: Attendance) -> Charge:
        """What a session that did not take place is charged; a counselor's
        own cancellation never is."""
        if outcome is Attendance.NO_SHOW:
            return self.no_show_charge
        if outcome is Attendance.LATE_CANCELLATION:
            return self.late_cancellation_charge
        return Charge.NONE

    @classmethod
    def checked(
        cls,
        notice_hours: int,
        late_cancellation_charge: Charge | None,
        no_show_charge: Charge | None,
        reminder_hours: Sequence[float] | None,
    ) -> BookingPolicy:
        """The policy, or INVALID_ARGUMENT naming each field out of bounds
        (a charge None: not one of the charges)."""
        checker = FieldChecker()
        checker.require(
            notice_hours_ok(notice_hours), "notice_hours", f"0 to {MAX_NOTICE_HOURS} hours"
        )
        for field, charge in (
            ("late_cancellation_charge", late_cancellation_charge),
            ("no_show_charge", no_show_charge),
        ):
            checker.require(charge is not None, field, "full, provider paid, counted or none")
        if reminder_hours is not None:
            checker.require(
                len(reminder_hours) <= MAX_REMINDERS
                and all(0 < h <= MAX_REMINDER_HOURS for h in reminder_hours),
                "reminder_hours",
                f"at most {MAX_REMINDERS}, each over 0 and up to {MAX_REMINDER_HOURS} hours",
            )
        checker.raise_if_any()
        assert late_cancellation_charge is not None and no_show_charge is not None
        return cls(
            notice_hours,
            late_cancellation_charge,
            no_show_charge,
            tuple(sorted(set(reminder_hours), reverse=True))
            if reminder_hours is not None
            else None,
        )


async def load(session: AsyncSession) -> BookingPolicy:
    row = await session.get(BookingPolicyRow, _ROW)
    if row is None:
        return BookingPolicy()
    return BookingPolicy(
        row.notice_hours,
        Charge(row.late_cancellation_charge),
        Charge(row.no_show_charge),
        tuple(row.reminder_hours) if row.reminder_hours is not None else None,
    )


async def save(session: AsyncSession, policy: BookingPolicy, now: datetime) -> None:
    row = await session.get(BookingPolicyRow, _ROW)
    if row is None:
        row = BookingPolicyRow(policy_id=_ROW)
        session.add(row)
    row.notice_hours = policy.notice_hours
    row.late_cancellation_charge = policy.late_cancellation_charge.value
    row.no_show_charge = policy.no_show_charge.value
    row.reminder_hours = list(policy.reminder_hours) if policy.reminder_hours is not None else None
    row.updated_at = now


class BookingPolicies:
    """GetBookingPolicy and SetBookingPolicy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get(self) -> BookingPolicy:
        async with self._sessions() as session:
            return await load(session)

    async def set(self, policy: BookingPolicy) -> BookingPolicy:
        async with self._sessions() as session, session.begin():
            await save(session, policy, clock.now())
        return policy
