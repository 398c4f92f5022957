"""What a cancellation is: who makes it (the employee, or the counselor,
whose own cancellation is never charged), whether it is late (inside the
tenant's notice period: rules/attendance.py), and what it keeps of the
caller's words: the reason is free text and may name a person or a
circumstance, so it is sealed with the data keys (registry/directory.py) on
the booking row, and the quota ledger and the audit trail get a code
instead."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from cryptography.fernet import MultiFernet

from services.matcher.booking.tenant_policy import BookingPolicy
from services.rules.attendance import Attendance, inside_notice
from services.rules.codes import RuleCode
from services.runtime.auth import Role, current_identity
from services.runtime.errors import InvalidArgument

# The reasons the quota's ledger records for a release a cancellation made.
CANCELLED = RuleCode.BOOKING_CANCELLED.value
GROUP_CANCELLED = RuleCode.GROUP_SESSION_CANCELLED.value


def seal(keys: MultiFernet, reason: str) -> bytes | None:
    """The reason sealed under the newest data key; None when there is none."""
    return keys.encrypt(reason.encode("utf-8")) if reason.strip() else None


class CancelledBy(StrEnum):
    EMPLOYEE = "employee"
    COUNSELOR = "counselor"


def who_cancels(said: CancelledBy | None) -> CancelledBy:
    """Who the cancellation is by: as the caller says, where its role may
    say so (a counselor may record the employee's; an administrator either),
    else its role's. An employee cannot pass a cancellation off as the
    counselor's, which is never charged."""
    role = current_identity().role
    if role is Role.EMPLOYEE:
        if said is CancelledBy.COUNSELOR:
            raise InvalidArgument.single("cancelled_by", "an employee cancels as the employee")
        return CancelledBy.EMPLOYEE
    if role is Role.COUNSELOR:
        return said or CancelledBy.COUNSELOR
    return said or CancelledBy.EMPLOYEE  # an administrator, for the employee


def attendance_of(
    by: CancelledBy, start: datetime, now: datetime, policy: BookingPolicy
) -> Attendance | None:
    """What cancelling a booked session makes of it: the counselor's
    cancellation, a late one (the employee's inside the notice period), or
    None, a cancellation in good time."""
    if by is CancelledBy.COUNSELOR:
        return Attendance.COUNSELOR_CANCELLED
    if inside_notice(start, now, policy.notice_hours):
        return Attendance.LATE_CANCELLATION
    return None
