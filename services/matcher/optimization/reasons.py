"""Why a case did not get all its sessions, in a code a program can switch on
and words a person can read.

The reasons are tried from the most fundamental to the least: nobody can
take the case at all; nobody's hours meet the employee's; a crisis case
could not be seen inside its deadline; then the limits the schedule as a
whole ran into (the employee's entitlement, one session a week, the
agency's budget, the providers' hour caps); and last, when none of those
binds, the counselors' time went to other cases.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from fractions import Fraction

from services.matcher.optimization.instance import (
    Case,
    CaseKind,
    Counselor,
    Instance,
    Session,
    Unserved,
)
from services.rules.codes import RuleCode
from services.rules.office_time import iso_week
from services.runtime.i18n import N_

# The reasons in words (message ids of the catalogs, services/runtime/locale):
# a schedule's JSON keeps the English, a report shows them translated.
WORDS = {
    RuleCode.NO_QUALIFIED_COUNSELOR: N_(
        "no counselor offers this category in a modality the case accepts "
        "(or those who do are excluded)"
    ),
    RuleCode.NO_COMMON_AVAILABILITY: N_(
        "no qualified counselor is free when the employee is, within the horizon"
    ),
    RuleCode.CRISIS_DEADLINE: N_(
        "no qualified counselor is free within the crisis deadline, and a crisis "
        "case's first session must start inside it"
    ),
    RuleCode.EMPLOYEE_ENTITLEMENT: N_("the employee's remaining entitlement is used up"),
    RuleCode.WEEKLY_LIMIT: N_(
        "every week in which a qualified counselor is free already holds the "
        "employee's session for that week"
    ),
    RuleCode.AGENCY_BUDGET: N_("the agency's budget cannot pay for another session"),
    RuleCode.PROVIDER_CAP: N_(
        "the contracted hours of every provider whose counselors could take the case are used up"
    ),
    RuleCode.OUTCOMPETED: N_("the qualified counselors' free time went to other cases"),
}
# The same, in a chart's few words.
LABELS = {
    RuleCode.NO_QUALIFIED_COUNSELOR: N_("no qualified counselor"),
    RuleCode.NO_COMMON_AVAILABILITY: N_("no common free time"),
    RuleCode.CRISIS_DEADLINE: N_("crisis deadline"),
    RuleCode.EMPLOYEE_ENTITLEMENT: N_("entitlement used up"),
    RuleCode.WEEKLY_LIMIT: N_("one session a week"),
    RuleCode.AGENCY_BUDGET: N_("agency budget"),
    RuleCode.PROVIDER_CAP: N_("provider's hour cap"),
    RuleCode.OUTCOMPETED: N_("time went to other cases"),
}


class _Use:
    """What a schedule takes of each limit."""

    def __init__(self, inst: Instance, sessions: Sequence[Session]) -> None:
        self.booked: Counter[str] = Counter(s.case for s in sessions)
        self.employee_minutes: Counter[str] = Counter()
        self.employee_weeks: Counter[tuple[str, tuple[int, int]]] = Counter()
        self.agency_spent: dict[str, Fraction] = defaultdict(Fraction)
        self.provider_minutes: Counter[str] = Counter()
        self.counselor_busy: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
        self.counselor_days: Counter[tuple[str, date]] = Counter()
        for s in sessions:
            case = inst.case_by_id[s.case]
            counselor = inst.counselor_by_id[s.counselor]
            self.employee_minutes[case.employee] += s.minutes
            self.employee_weeks[(case.employee, iso_week(s.start))] += 1
            self.agency_spent[case.agency] += inst.session_cost(counselor, s.minutes)
            self.provider_minutes[counselor.provider] += s.minutes
            self.counselor_busy[s.counselor].append((s.start, s.end))
            self.counselor_days[(s.counselor, s.start.date())] += 1

        for busy in self.counselor_busy.values():
            busy.sort()

    def free(self, counselor: Counselor, start: datetime, minutes: int) -> bool:
        """The counselor could still take a session at `start` (rule 3). A
        valid schedule's sessions of one counselor do not overlap, so only
        the sessions either side of `start` can be in the way."""
        if self.counselor_days[(counselor.id, start.date())] >= counselor.max_sessions_per_day:
            return False
        busy = self.counselor_busy[counselor.id]
        at = bisect.bisect_left(busy, (start,))
        end = start + timedelta(minutes=minutes)
        after_ok = at == len(busy) or end <= busy[at][0]
        before_ok = at == 0 or busy[at - 1][1] <= start
        return after_ok and before_ok


def reason_for(inst: Instance, case: Case, use: _Use) -> RuleCode:
    """The first reason, in the module's order, that holds for the case."""
    counselors = inst.qualified(case)
    if not counselors:
        return RuleCode.NO_QUALIFIED_COUNSELOR
    starts = {k.id: inst.starts(case, k) for k in counselors}
    if not any(starts.values()):
        return RuleCode.NO_COMMON_AVAILABILITY
    if case.kind is CaseKind.CRISIS and use.booked[case.id] == 0:
        deadline = inst.reference_time(case) + inst.rules.crisis_deadline
        if not any(t <= deadline for found in starts.values() for t in found):
            return RuleCode.CRISIS_DEADLINE
    used = use.employee_minutes[case.employee]
    if used + case.minutes > case.employee_remaining_hours * 60:
        return RuleCode.EMPLOYEE_ENTITLEMENT
    weeks = {iso_week(t) for found in starts.values() for t in found}
    limit = inst.rules.max_sessions_per_week
    if all(use.employee_weeks[(case.employee, w)] >= limit for w in weeks):
        return RuleCode.WEEKLY_LIMIT
    usable = [k for k in counselors if starts[k.id]]
    limit_met = _money_or_hours(inst, case, use, usable)
    if limit_met is not None:
        return limit_met
    # What is left to the case: starts in a week it may still use, at a time
    # the schedule left free. None left, the time went to other cases; some
    # left, the budget or the caps may still rule those out.
    open_weeks = {w for w in weeks if use.employee_weeks[(case.employee, w)] < limit}
    left = [
        k
        for k in usable
        if any(iso_week(t) in open_weeks and use.free(k, t, case.minutes) for t in starts[k.id])
    ]
    if not left:
        return RuleCode.OUTCOMPETED
    return _money_or_hours(inst, case, use, left) or RuleCode.OUTCOMPETED


def _money_or_hours(
    inst: Instance, case: Case, use: _Use, counselors: Sequence[Counselor]
) -> RuleCode | None:
    """AGENCY_BUDGET if what is left of the budget pays for a session with
    none of `counselors`, PROVIDER_CAP if all their providers' hours are
    used up, else None."""
    cheapest = min(inst.session_cost(k, case.minutes) for k in counselors)
    budget = inst.agency_by_id[case.agency].budget_ntd
    if budget - use.agency_spent[case.agency] < cheapest:
        return RuleCode.AGENCY_BUDGET
    providers = {k.provider for k in counselors}
    if all(
        inst.provider_by_id[p].hours_cap * 60 - use.provider_minutes[p] < case.minutes
        for p in providers
    ):
        return RuleCode.PROVIDER_CAP
    return None


def unserved(inst: Instance, sessions: Sequence[Session]) -> tuple[Unserved, ...]:
    """Every case the sessions leave short, with how many are missing and why."""
    use = _Use(inst, sessions)
    found = []
    for case in inst.cases:
        missing = case.sessions - use.booked[case.id]
        if missing > 0:
            reason = reason_for(inst, case, use)
            found.append(Unserved(case.id, missing, WORDS[reason], reason.value))
    return tuple(found)
