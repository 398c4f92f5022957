"""What became of a booked session, and what a session that did not take
place costs (issue 16: "a wasted hour is public money").

A session is attended, missed (a no-show the counselor records), cancelled
late (inside the tenant's notice period, by the employee), or cancelled by
the counselor. The tenant's policy says what a missed or late-cancelled
session is charged: the provider is paid (the agency's money and the
provider's contracted hours), the session counts toward the employee's
entitlement, both, or neither. A counselor's own cancellation is never
charged to anyone. A session charged in any way is still that week's
session (the weekly limit); one charged nothing frees its week.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from services.rules.codes import RuleCode

NOTICE_HOURS = 24  # cancelling later than this before the start is late
MAX_NOTICE_HOURS = 14 * 24


class Attendance(StrEnum):
    ATTENDED = "attended"
    NO_SHOW = "no_show"
    LATE_CANCELLATION = "late_cancellation"
    COUNSELOR_CANCELLED = "counselor_cancelled"

    @property
    def rule(self) -> RuleCode | None:
        """The code the ledger records a session settled so by; None for a
        session that took place."""
        return _RULES.get(self)


_RULES = {
    Attendance.NO_SHOW: RuleCode.NO_SHOW,
    Attendance.LATE_CANCELLATION: RuleCode.LATE_CANCELLATION,
    Attendance.COUNSELOR_CANCELLED: RuleCode.COUNSELOR_CANCELLED,
}


class Charge(StrEnum):
    """What a session that did not take place is charged."""

    FULL = "full"  # the provider is paid and the session counts
    PROVIDER_PAID = "provider_paid"  # the provider is paid; the entitlement is untouched
    ENTITLEMENT_COUNTED = "entitlement_counted"  # counts; the provider is not paid
    NONE = "none"

    @property
    def pays_provider(self) -> bool:
        return self in (Charge.FULL, Charge.PROVIDER_PAID)

    @property
    def counts_entitlement(self) -> bool:
        return self in (Charge.FULL, Charge.ENTITLEMENT_COUNTED)


# The defaults, for a tenant that sets no policy: nothing is charged.
# Whether a provider is paid for an hour it kept free is its contract's
# term, which the tenant states in its booking policy; until then public
# money pays only for sessions held, and every late cancellation and
# no-show is still recorded and counted.
LATE_CANCELLATION_CHARGE = Charge.NONE
NO_SHOW_CHARGE = Charge.NONE


def inside_notice(start: datetime, now: datetime, notice_hours: int = NOTICE_HOURS) -> bool:
    """Whether cancelling at `now` a session starting at `start` is late:
    less than `notice_hours` before it (a session already started counts
    as late too: it can only be missed or completed)."""
    return start - now < timedelta(hours=notice_hours)


def notice_hours_ok(hours: int) -> bool:
    return 0 <= hours <= MAX_NOTICE_HOURS
