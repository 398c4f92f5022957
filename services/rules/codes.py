"""One vocabulary of rule codes: every FAILED_PRECONDITION refusal, every
reason a case went unserved and every `google.rpc.ErrorInfo.reason` is one
of these. Clients switch on them, so a code, once published, never changes."""

from __future__ import annotations

from enum import StrEnum


class RuleCode(StrEnum):
    # The funding rules (Miaoli 5): what the quota ledger refuses.
    WEEKLY_LIMIT = "WEEKLY_LIMIT"
    EMPLOYEE_ENTITLEMENT = "EMPLOYEE_ENTITLEMENT"
    PROVIDER_CAP = "PROVIDER_CAP"
    AGENCY_BUDGET = "AGENCY_BUDGET"
    NO_CONTRACT = "NO_CONTRACT"
    NO_BUDGET_POOL = "NO_BUDGET_POOL"
    NO_ENTITLEMENT_POLICY = "NO_ENTITLEMENT_POLICY"
    STAFF_CATEGORY_MISMATCH = "STAFF_CATEGORY_MISMATCH"
    CAP_BELOW_USE = "CAP_BELOW_USE"
    # Who pays is the people directory's to say (or the employee's token's).
    NOT_IN_DIRECTORY = "NOT_IN_DIRECTORY"
    # A booking's and a quota hold's life: the state machines refuse these.
    HOLD_EXPIRED = "HOLD_EXPIRED"
    HOLD_RELEASED = "HOLD_RELEASED"
    HOLD_BOOKED = "HOLD_BOOKED"
    NOT_BOOKED = "NOT_BOOKED"
    BOOKING_BUSY = "BOOKING_BUSY"
    BOOKING_CANCELLED = "BOOKING_CANCELLED"
    GROUP_SESSION_CANCELLED = "GROUP_SESSION_CANCELLED"
    SESSION_COMPLETED = "SESSION_COMPLETED"
    SESSION_NOT_STARTED = "SESSION_NOT_STARTED"
    # What became of a session that did not take place (rules/attendance.py):
    # the reasons the ledger records it by.
    NO_SHOW = "NO_SHOW"
    LATE_CANCELLATION = "LATE_CANCELLATION"
    COUNSELOR_CANCELLED = "COUNSELOR_CANCELLED"
    # Slots: why a time cannot be held.
    NOT_BOOKABLE = "NOT_BOOKABLE"
    SLOT_TAKEN = "SLOT_TAKEN"
    COUNSELOR_DAY_FULL = "COUNSELOR_DAY_FULL"
    CASE_FULLY_BOOKED = "CASE_FULLY_BOOKED"
    CRISIS_DEADLINE = "CRISIS_DEADLINE"
    # The waitlist (rules/waitlist.py).
    SLOTS_AVAILABLE = "SLOTS_AVAILABLE"
    ALREADY_WAITING = "ALREADY_WAITING"
    # The satisfaction survey's link (rules/survey.py).
    SURVEY_EXPIRED = "SURVEY_EXPIRED"
    # Cases their owner changed or closed.
    CASE_WITHDRAWN = "CASE_WITHDRAWN"
    CASE_BOOKINGS_CONFLICT = "CASE_BOOKINGS_CONFLICT"
    # Group sessions.
    GROUP_TOO_SMALL = "GROUP_TOO_SMALL"
    GROUP_DECLINED = "GROUP_DECLINED"
    # Why a case went unserved in a match, beyond the rules above.
    NO_QUALIFIED_COUNSELOR = "NO_QUALIFIED_COUNSELOR"
    NO_COMMON_AVAILABILITY = "NO_COMMON_AVAILABILITY"
    OUTCOMPETED = "OUTCOMPETED"
    # The suite's own preconditions.
    NO_AUDIT_TRAIL = "NO_AUDIT_TRAIL"
