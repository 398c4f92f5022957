"""Each rule in words a person booking a session understands: what the
suite tells them when the rule refuses their request. English here, the
message ids of the translation catalogs (services/runtime/locale/); every
one has its Traditional Chinese translation (tests/rules/test_explanations.py)."""

from __future__ import annotations

from services.rules.codes import RuleCode


def N_(text: str) -> str:
    """Marks a message id for the catalogs (Babel extracts N_), unchanged."""
    return text


EXPLANATIONS: dict[RuleCode, str] = {
    RuleCode.WEEKLY_LIMIT: N_(
        "One session a week per person: there is already a session in that week."
    ),
    RuleCode.EMPLOYEE_ENTITLEMENT: N_("Your counseling hours for this year are used up."),
    RuleCode.PROVIDER_CAP: N_(
        "The counseling provider's contracted hours for this year are used up."
    ),
    RuleCode.AGENCY_BUDGET: N_("Your agency's counseling budget for this year is used up."),
    RuleCode.NO_CONTRACT: N_("This counseling provider has no contract for that year."),
    RuleCode.NO_BUDGET_POOL: N_("Your agency has no counseling budget for that year."),
    RuleCode.NO_ENTITLEMENT_POLICY: N_(
        "No counseling hours are set for your staff category that year."
    ),
    RuleCode.STAFF_CATEGORY_MISMATCH: N_(
        "Your staff category differs from the one your hours were opened with this year."
    ),
    RuleCode.CAP_BELOW_USE: N_("The new cap would be below the hours already used."),
    RuleCode.NOT_IN_DIRECTORY: N_(
        "You are not in the staff directory yet: please ask your HR office."
    ),
    RuleCode.HOLD_EXPIRED: N_("The time you held has expired: please choose a time again."),
    RuleCode.HOLD_RELEASED: N_("The time you held was released: please choose a time again."),
    RuleCode.HOLD_BOOKED: N_("That time is already booked."),
    RuleCode.NOT_BOOKED: N_("This session is not booked."),
    RuleCode.BOOKING_BUSY: N_("This booking is being changed right now: please try again."),
    RuleCode.BOOKING_CANCELLED: N_("This booking has been cancelled."),
    RuleCode.GROUP_SESSION_CANCELLED: N_("This group session has been cancelled."),
    RuleCode.SESSION_COMPLETED: N_("This session has already taken place."),
    RuleCode.SESSION_NOT_STARTED: N_(
        "This session has not started yet: it can be completed once it has begun."
    ),
    RuleCode.NO_SHOW: N_("This session was missed."),
    RuleCode.LATE_CANCELLATION: N_("This session was cancelled inside the notice period."),
    RuleCode.COUNSELOR_CANCELLED: N_("The counselor cancelled this session."),
    RuleCode.NOT_BOOKABLE: N_("That time cannot be booked."),
    RuleCode.SLOT_TAKEN: N_("Someone else has just taken that time: please choose another."),
    RuleCode.COUNSELOR_DAY_FULL: N_("The counselor's day is full."),
    RuleCode.CASE_FULLY_BOOKED: N_("Every session you asked for is already booked."),
    RuleCode.CRISIS_DEADLINE: N_("A crisis case's first session must be within three days."),
    RuleCode.SLOTS_AVAILABLE: N_("A time that suits you is free now: book it instead of waiting."),
    RuleCode.ALREADY_WAITING: N_("This request is on the waiting list already."),
    RuleCode.SURVEY_EXPIRED: N_("This questionnaire has closed. Thank you all the same."),
    RuleCode.CASE_WITHDRAWN: N_("This request has been withdrawn: submit a new one to book again."),
    RuleCode.CASE_BOOKINGS_CONFLICT: N_(
        "A session already booked does not fit this change: cancel or move it first."
    ),
    RuleCode.GROUP_TOO_SMALL: N_("Too few people can join this group session."),
    RuleCode.GROUP_DECLINED: N_("This case does not take part in group sessions."),
    RuleCode.NO_QUALIFIED_COUNSELOR: N_(
        "No counselor offers this kind of counseling in a way you accept."
    ),
    RuleCode.NO_COMMON_AVAILABILITY: N_("No counselor is free when you are."),
    RuleCode.OUTCOMPETED: N_("The counselors' free time went to other cases."),
    RuleCode.NO_AUDIT_TRAIL: N_("This service keeps no audit trail, which this needs."),
}
