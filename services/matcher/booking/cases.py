"""An employee's case: what they need, when they can come, and who they will see.

Cases carry a pseudonymous employee id only; names and contact details live
elsewhere (the confidentiality issue), never here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from services.matcher.optimization.instance import CaseKind
from services.matcher.registry.counselors import Category, Counselor, Modality
from services.rules.codes import RuleCode
from services.rules.sessions import BOOKABLE_LENGTH_TEXT, bookable_length
from services.runtime.errors import FailedPrecondition
from services.runtime.fields import FieldChecker

MAX_SESSIONS = 12
MAX_RANGES = 200
LONGEST_RANGE = timedelta(days=31)


class TimeOff(StrEnum):
    LEAVE = "leave"
    OFFICIAL_LEAVE = "official_leave"


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # timezone-aware
    end: datetime

    def holds(self, start: datetime, end: datetime) -> bool:
        return self.start <= start and end <= self.end


@dataclass(frozen=True)
class Case:
    """A case as the booking service keeps it (the benchmark's `Case` in
    instance.py is the optimizer's view of the same thing); the kinds are
    the benchmark's."""

    case_id: str
    employee_id: str
    agency_id: str
    staff_category: str
    category: Category
    kind: CaseKind
    referral_reference: str
    sessions_wanted: int
    minutes: int
    modalities: tuple[Modality, ...]
    availability: tuple[TimeRange, ...]
    preferred_counselor_id: str
    excluded_counselor_ids: tuple[str, ...]
    time_off: TimeOff
    submitted_at: datetime
    accepts_group: bool = False  # would join a group session on its category
    withdrawn_at: datetime | None = None  # closed by its owner (WithdrawCase)

    def can_see(self, counselor: Counselor) -> bool:
        """Rule 1 of the matching rules: qualified, not excluded, and a
        modality both accept."""
        return (
            self.category in counselor.specialties
            and counselor.counselor_id not in self.excluded_counselor_ids
            and any(m in counselor.modalities for m in self.modalities)
        )

    def modality_with(self, counselor: Counselor) -> Modality:
        return next(m for m in self.modalities if m in counselor.modalities)

    def same_request(self, other: Case) -> bool:
        """True when `other` asks for the same thing (a retried submission,
        which finds the case withdrawn if it was)."""
        asked = replace(other, submitted_at=self.submitted_at)
        return self == replace(asked, withdrawn_at=self.withdrawn_at)

    def with_submitted_at(self, moment: datetime) -> Case:
        return Case(**{**self.__dict__, "submitted_at": moment})


# What an employee may change in their case (UpdateCase); who it is for, who
# pays, what it is about and its kind stay as submitted.
UPDATABLE = (
    "sessions_wanted",
    "minutes",
    "modalities",
    "availability",
    "preferred_counselor_id",
    "excluded_counselor_ids",
    "time_off",
    "accepts_group",
)


def require_open(case: Case) -> None:
    """FAILED_PRECONDITION CASE_WITHDRAWN for a case its owner withdrew."""
    if case.withdrawn_at is not None:
        raise FailedPrecondition(RuleCode.CASE_WITHDRAWN, "case", "the case was withdrawn")


def validate(case: Case, checker: FieldChecker, prefix: str = "case") -> None:
    checker.identifier(case.case_id, f"{prefix}.case_id")
    checker.identifier(case.employee_id, f"{prefix}.employee_id")
    checker.identifier(case.agency_id, f"{prefix}.agency_id")
    checker.identifier(case.staff_category, f"{prefix}.staff_category")
    if case.kind is CaseKind.INVOLUNTARY:
        checker.identifier(case.referral_reference, f"{prefix}.referral_reference")
    else:
        checker.require(
            not case.referral_reference,
            f"{prefix}.referral_reference",
            "only involuntary cases carry a referral reference",
        )
    checker.require(
        1 <= case.sessions_wanted <= MAX_SESSIONS,
        f"{prefix}.sessions_wanted",
        f"1 to {MAX_SESSIONS}",
    )
    checker.require(
        bookable_length(case.minutes),
        f"{prefix}.minutes",
        BOOKABLE_LENGTH_TEXT,
    )
    checker.require(bool(case.modalities), f"{prefix}.modalities", "at least one")
    checker.require(
        0 < len(case.availability) <= MAX_RANGES,
        f"{prefix}.availability",
        f"1 to {MAX_RANGES} time ranges",
    )
    for n, window in enumerate(case.availability):
        field = f"{prefix}.availability[{n}]"
        checker.require(window.start < window.end, f"{field}.end", "after start")
        checker.require(window.end - window.start <= LONGEST_RANGE, field, "at most 31 days long")
    if case.preferred_counselor_id:
        checker.identifier(case.preferred_counselor_id, f"{prefix}.preferred_counselor_id")
        checker.require(
            case.preferred_counselor_id not in case.excluded_counselor_ids,
            f"{prefix}.preferred_counselor_id",
            "is also excluded",
        )
    checker.require(
        len(case.excluded_counselor_ids) <= 100,
        f"{prefix}.excluded_counselor_ids",
        "at most 100",
    )
    for n, counselor_id in enumerate(case.excluded_counselor_ids):
        checker.identifier(counselor_id, f"{prefix}.excluded_counselor_ids[{n}]")
