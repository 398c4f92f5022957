"""Which slots a case can book: the hard rules of one online booking.

A slot is a counselor and a start. It is bookable for a case when the
counselor is qualified for it (category, not excluded, a modality both
accept), the whole session lies inside one of the counselor's weekly windows
on a day that is not a national holiday, inside one of the case's
availability ranges, on the half hour, in the future and not before the
case came in; and when the live appointments (holds and bookings) leave
room: the counselor is free then and under their daily limit, the employee
has no other session that ISO week, and the case still wants a session.
Times are Asia/Taipei on the wall clock, as the programmes keep them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from services.matcher.booking.cases import Case
from services.matcher.optimization.instance import CaseKind
from services.matcher.registry.counselors import Counselor, ExceptionKind, Modality
from services.office_calendar.calendar import OfficeCalendar
from services.rules.codes import RuleCode
from services.rules.office_time import OFFICE_ZONE, iso_week, local_day
from services.rules.sessions import SLOT_MINUTES

STEP = timedelta(minutes=SLOT_MINUTES)


@dataclass(frozen=True)
class Appointment:
    """A live hold or booking: what blocks a counselor's and an employee's time."""

    booking_id: str
    case_id: str
    employee_id: str
    counselor_id: str
    start: datetime
    end: datetime
    group_id: str = ""  # a group session's places are one session of the counselor's

    @property
    def session(self) -> str:
        """What the counselor's daily limit counts: a group session once."""
        return self.group_id or self.booking_id


@dataclass(frozen=True)
class Offer:
    counselor: Counselor
    start: datetime
    minutes: int
    modality: Modality
    preferred: bool
    within_deadline: bool


class Diary:
    """The live appointments that bear on one case's booking."""

    def __init__(self, appointments: Iterable[Appointment]) -> None:
        self.appointments = list(appointments)

    def clash(self, counselor_id: str, start: datetime, end: datetime) -> bool:
        return any(
            a.counselor_id == counselor_id and a.start < end and start < a.end
            for a in self.appointments
        )

    def sessions_on(self, counselor_id: str, day: date) -> int:
        return len(
            {
                a.session
                for a in self.appointments
                if a.counselor_id == counselor_id and local_day(a.start) == day
            }
        )

    def weeks_of(self, employee_id: str) -> set[tuple[int, int]]:
        return {iso_week(a.start) for a in self.appointments if a.employee_id == employee_id}

    def sessions_of(self, case_id: str) -> int:
        return sum(1 for a in self.appointments if a.case_id == case_id)


def counselor_windows(
    counselor: Counselor, first: date, last: date, calendar: OfficeCalendar
) -> list[tuple[datetime, datetime]]:
    """The counselor's hours as time ranges from `first` to `last`, earliest
    first: the weekly windows, except on weekdays the office calendar marks
    as holidays (weekends keep whatever windows the counselor keeps on
    them), plus extra hours, minus leave."""
    hours = []
    day = first
    while day <= last:
        holiday = day.isoweekday() <= 5 and calendar.known(day) and not calendar.is_office_day(day)
        if not holiday:
            for window in counselor.weekly_availability:
                if window.weekday == day.isoweekday():
                    hours.append(
                        (
                            datetime.combine(day, window.start, OFFICE_ZONE),
                            datetime.combine(day, window.end, OFFICE_ZONE),
                        )
                    )
        day += timedelta(days=1)
    begin = datetime.combine(first, time(), OFFICE_ZONE)
    end = datetime.combine(last + timedelta(days=1), time(), OFFICE_ZONE)
    for change in counselor.exceptions:
        if change.kind is ExceptionKind.EXTRA and change.start < end and begin < change.end:
            hours.append((max(change.start, begin), min(change.end, end)))
    leave = [(c.start, c.end) for c in counselor.exceptions if c.kind is ExceptionKind.LEAVE]
    return without(merged(hours), leave)


def merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """The ranges with overlapping and touching ones joined, earliest first."""
    joined: list[tuple[datetime, datetime]] = []
    for start, end in sorted(ranges):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def without(
    ranges: list[tuple[datetime, datetime]], taken: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The ranges with the taken times cut out."""
    for taken_start, taken_end in taken:
        cut = []
        for start, end in ranges:
            if taken_end <= start or end <= taken_start:
                cut.append((start, end))
                continue
            if start < taken_start:
                cut.append((start, taken_start))
            if taken_end < end:
                cut.append((taken_end, end))
        ranges = cut
    return ranges


def _align_up(moment: datetime) -> datetime:
    """The first half hour at or after `moment` (Taipei is a whole-hour zone)."""
    epoch = datetime(2000, 1, 1, tzinfo=OFFICE_ZONE)
    offset = (moment - epoch) % STEP
    return moment if not offset else moment + (STEP - offset)


def crisis_deadline(case: Case, hours: int) -> datetime | None:
    if case.kind is not CaseKind.CRISIS:
        return None
    return case.submitted_at + timedelta(hours=hours)


def blocked_by(
    case: Case, counselor: Counselor, start: datetime, diary: Diary
) -> tuple[str, str] | None:
    """What, among the live appointments, keeps the case from this slot:
    (rule, message), or None when it is free."""
    end = start + timedelta(minutes=case.minutes)
    return case_busy(case, start, diary) or counselor_busy(counselor, start, end, diary)


def case_busy(case: Case, start: datetime, diary: Diary) -> tuple[str, str] | None:
    """The part of `blocked_by` that depends on the case alone."""
    if case.withdrawn_at is not None:
        return RuleCode.CASE_WITHDRAWN, "the case was withdrawn"
    if diary.sessions_of(case.case_id) >= case.sessions_wanted:
        return RuleCode.CASE_FULLY_BOOKED, "the case has all the sessions it wants"
    if iso_week(start) in diary.weeks_of(case.employee_id):
        return RuleCode.WEEKLY_LIMIT, "WEEKLY_LIMIT: one session per person per week"
    return None


def counselor_busy(
    counselor: Counselor, start: datetime, end: datetime, diary: Diary
) -> tuple[str, str] | None:
    """The part of `blocked_by` that depends on the counselor alone."""
    if diary.clash(counselor.counselor_id, start, end):
        return RuleCode.SLOT_TAKEN, "the counselor is taken at that time"
    if (
        diary.sessions_on(counselor.counselor_id, local_day(start))
        >= counselor.max_sessions_per_day
    ):
        return RuleCode.COUNSELOR_DAY_FULL, "the counselor's sessions for that day are full"
    return None


def unbookable(
    case: Case, counselor: Counselor, start: datetime, calendar: OfficeCalendar, now: datetime
) -> str | None:
    """Why the slot breaks a rule of its own, whatever else is booked; None
    when it is a slot the case could have."""
    end = start + timedelta(minutes=case.minutes)
    if not case.can_see(counselor):
        return "the counselor does not take this category or modality, or is excluded"
    if _align_up(start) != start:
        return "sessions start on the hour or the half hour"
    if start < max(now, case.submitted_at):
        return "the slot is in the past"
    if not any(r.holds(start, end) for r in case.availability):
        return "the slot is outside the case's availability"
    day = local_day(start)
    if not any(
        a <= start and end <= b for a, b in counselor_windows(counselor, day, day, calendar)
    ):
        return "the slot is outside the counselor's hours on office days"
    return None


def find(
    case: Case,
    counselors: Sequence[Counselor],
    diary: Diary,
    calendar: OfficeCalendar,
    window: tuple[datetime, datetime],
    now: datetime,
    deadline_hours: int,
) -> list[Offer]:
    """Every free slot of the case in the window, best first: for a crisis
    case those inside its deadline, then the preferred counselor's, then the
    earliest (ties by counselor id)."""
    if diary.sessions_of(case.case_id) >= case.sessions_wanted:
        return []
    length = timedelta(minutes=case.minutes)
    floor = max(window[0], now, case.submitted_at)
    deadline = crisis_deadline(case, deadline_hours)
    taken_weeks = diary.weeks_of(case.employee_id)
    offers: list[Offer] = []
    for counselor in counselors:
        if not case.can_see(counselor):
            continue
        modality = case.modality_with(counselor)
        first, last = local_day(floor), local_day(window[1])
        for begin, finish in counselor_windows(counselor, first, last, calendar):
            for available in case.availability:
                start = _align_up(max(begin, available.start, floor))
                stop = min(finish, available.end, window[1])
                while start + length <= stop:
                    # The case's own limits were checked once, above.
                    if iso_week(start) not in taken_weeks and not counselor_busy(
                        counselor, start, start + length, diary
                    ):
                        offers.append(
                            Offer(
                                counselor,
                                start,
                                case.minutes,
                                modality,
                                counselor.counselor_id == case.preferred_counselor_id,
                                deadline is not None and start <= deadline,
                            )
                        )
                    start += STEP
    offers.sort(
        key=lambda o: (
            deadline is not None and not o.within_deadline,
            not o.preferred,
            o.start,
            o.counselor.counselor_id,
        )
    )
    return offers
