"""Finding a time for one meeting against hand-made calendars: only times
when every required attendee is free, in office hours on office days; the
options where more optional attendees can come first."""

from __future__ import annotations

from datetime import date, datetime, time

from services.calendar.meeting_time import find_meeting_times
from services.calendar.program import OfficeHours, Person, Span, WeeklyBusy
from services.office_calendar import load_shipped

HOURS = OfficeHours(((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))))
CALENDAR = load_shipped()


def _at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2027, 3, day, hh, mm)


def test_only_times_when_all_required_are_free_in_office_hours() -> None:
    # Monday 2027-03-01 to Wednesday 03-03. The chair is busy Monday
    # morning and all Tuesday; the secretary busy Monday afternoon and
    # Wednesday from 10:00 on, and every Wednesday 08:30-09:00.
    chair = Person("chair", busy=(Span(_at(1, 8, 30), _at(1, 12)), Span(_at(2, 0), _at(3, 0))))
    secretary = Person(
        "secretary",
        busy=(Span(_at(1, 13, 30), _at(1, 17, 30)), Span(_at(3, 10), _at(3, 17, 30))),
        weekly_busy=(WeeklyBusy(2, time(8, 30), time(9, 0)),),
    )
    options = find_meeting_times(
        [chair, secretary], [], 60, date(2027, 3, 1), date(2027, 3, 3), CALENDAR, HOURS, limit=50
    )
    assert [o.start for o in options] == [_at(3, 9)]  # 09:00-10:00 Wednesday, nothing else


def test_optional_attendees_rank_the_options_and_are_named() -> None:
    chair = Person("chair")
    early = Person("early-bird", busy=(Span(_at(8, 13, 30), _at(8, 17, 30)),))
    late = Person("late-riser", busy=(Span(_at(8, 8, 30), _at(8, 10, 0)),))
    options = find_meeting_times(
        [chair], [early, late], 90, date(2027, 3, 8), date(2027, 3, 8), CALENDAR, HOURS, limit=3
    )
    best = options[0]
    assert (best.start, best.can_come, best.cannot_come) == (
        _at(8, 10),
        ("early-bird", "late-riser"),
        (),
    )
    assert all(o.start.date() == date(2027, 3, 8) for o in options)
    assert [len(o.can_come) for o in options] == sorted(
        (len(o.can_come) for o in options), reverse=True
    )
    for a in options:  # distinct options, none overlapping another
        assert sum(a.start < b.end and b.start < a.end for b in options) == 1


def test_holidays_and_weekends_offer_nothing() -> None:
    # 2027-02-05 to 02-14: the Lunar New Year holidays and a weekend.
    options = find_meeting_times(
        [Person("chair")], [], 60, date(2027, 2, 5), date(2027, 2, 14), CALENDAR, HOURS, limit=100
    )
    # Offices close 4-10 February 2027 (eve, Lunar New Year, days in lieu):
    # only Thursday 11 and Friday 12 are open.
    assert {o.start.date() for o in options} == {date(2027, 2, 11), date(2027, 2, 12)}
    assert all(
        any(b <= o.start.time() and o.end.time() <= e for b, e in HOURS.blocks) for o in options
    )
