"""Planning a year's programme: the shipped Pingtung-style plan keeps every
rule (checked here on the plan itself, not on the solver's word), an
impossible programme says which activity and which rule, the iCalendar
export reads in two independent libraries, and bad files are refused with
the key and line of each mistake."""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from pathlib import Path

import icalendar
import pytest
import vobject

from services.calendar.ics import export_ics
from services.calendar.planner import Event, Plan, plan_program
from services.calendar.program import Program
from services.calendar.program_file import ProgramFileError, parse_program
from services.office_calendar import load_shipped
from services.runtime import i18n

EXAMPLE = Path(__file__).resolve().parents[2] / "services/calendar/examples/pingtung-2027.toml"
OFFICE_HOURS = [(time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))]


@pytest.fixture(scope="module")
def pingtung() -> Plan:
    return plan_program(parse_program(EXAMPLE.read_text()), time_limit=20)


def _of(plan: Plan, activity: str) -> list[Event]:
    return sorted((e for e in plan.events if e.activity == activity), key=lambda e: e.start)


def test_every_activity_of_the_pingtung_year_is_placed(pingtung: Plan) -> None:
    assert pingtung.unplaced == ()
    wanted = {a.id: a.occurrences() for a in pingtung.program.activities}
    assert {a: len(_of(pingtung, a)) for a in wanted} == wanted


def test_events_fall_on_office_days_in_office_hours_inside_their_windows(pingtung: Plan) -> None:
    office = load_shipped()
    activities = {a.id: a for a in pingtung.program.activities}
    for event in pingtung.events:
        day = event.start.date()
        assert event.start.year == 2027
        assert office.is_office_day(day), event  # national holidays are closed days
        assert office.day(day).note in ("", "補行上班"), event
        assert any(
            begin <= event.start.time() and event.end.time() <= end and event.end.date() == day
            for begin, end in OFFICE_HOURS
        ), event
        months = {m for w in activities[event.activity].windows for m in w.months()}
        assert event.start.month in months, event


def test_working_circle_meets_in_four_quarters_six_weeks_apart(pingtung: Plan) -> None:
    meetings = _of(pingtung, "working-circle")
    assert len(meetings) == 4
    assert sorted((m.start.month - 1) // 3 for m in meetings) == [0, 1, 2, 3]
    for earlier, later in itertools.pairwise(meetings):
        assert later.start - earlier.start >= timedelta(weeks=6)


def test_the_two_reviews_fall_in_their_own_windows(pingtung: Plan) -> None:
    first, second = _of(pingtung, "review")
    assert 1 <= first.start.month <= 3
    assert 9 <= second.start.month <= 12


def test_no_person_or_room_is_double_booked_or_over_their_day(pingtung: Plan) -> None:
    program = pingtung.program
    for a, b in itertools.combinations(pingtung.events, 2):
        overlap = a.start < b.end and b.start < a.end
        if overlap:
            assert not set(a.required) & set(b.required), (a, b)
            assert a.room is None or a.room != b.room, (a, b)
    per_day: dict[tuple[str, date], int] = {}
    for event in pingtung.events:
        for person in event.required:
            assert not program.person(person).busy_during(event.start, event.end), event
            key = (person, event.start.date())
            per_day[key] = per_day.get(key, 0) + 1
    assert max(per_day.values()) <= program.max_events_per_person_per_day
    rooms = {r.id: r.capacity for r in program.rooms}
    seats = {a.id: a.seats() for a in program.activities}
    for event in pingtung.events:
        assert event.room is not None and rooms[event.room] >= seats[event.activity], event


def test_the_convener_busy_all_through_the_first_review_window_is_explained() -> None:
    text = EXAMPLE.read_text().replace(
        '"2027-05-03 08:30/2027-05-28 17:30",',
        '"2027-05-03 08:30/2027-05-28 17:30", "2027-01-01 00:00/2027-03-31 23:30",',
    )
    plan = plan_program(parse_program(text), time_limit=20)
    (left_out,) = plan.unplaced
    assert (left_out.activity, left_out.occurrence, left_out.rule) == ("review", 1, "ATTENDEE_BUSY")
    assert "review #1" in left_out.words["en"]
    assert "secretary-general is busy" in left_out.words["en"]
    # Made in every language at once, and shown in the reader's.
    assert (
        "必要出席者 secretary-general 在116年1月1日（五）至116年3月31日（三）的所有上班時間都沒空"
        in (left_out.words["zh_TW"])
    )
    with i18n.speaking("zh_TW"):
        assert left_out.explanation == left_out.words["zh_TW"]
    with i18n.speaking("en"):
        assert left_out.explanation == left_out.words["en"]
    assert len(_of(plan, "review")) == 1  # the second review still takes place


def test_two_meetings_wanting_one_free_afternoon_name_each_other() -> None:
    program = parse_program(
        """
[program]
name = "Clash"
year = 2027
office_hours = ["13:30-17:30"]

[[people]]
id = "director"
busy = ["2027-06-01 00:00/2027-06-15 00:00", "2027-06-16 00:00/2027-07-01 00:00"]

[[rooms]]
id = "room"
capacity = 10

[[activities]]
id = "budget-meeting"
windows = ["Jun"]
duration_minutes = 180
required = ["director"]

[[activities]]
id = "staff-meeting"
windows = ["Jun"]
duration_minutes = 180
required = ["director"]
"""
    )
    plan = plan_program(program, time_limit=10)
    (placed,) = plan.events
    (left_out,) = plan.unplaced
    assert placed.start == datetime(2027, 6, 15, 13, 30)
    assert left_out.rule == "DOUBLE_BOOKED"
    assert left_out.activity in left_out.words["en"]
    assert placed.activity in left_out.words["en"]
    assert "double-booked (director)" in left_out.words["en"]
    assert "必要出席者時間重疊（director）" in left_out.words["zh_TW"]


def test_a_room_too_small_and_a_meeting_longer_than_office_hours_are_explained() -> None:
    base = EXAMPLE.read_text()
    plan = plan_program(
        parse_program(base.replace("room_capacity = 100", "room_capacity = 500")), time_limit=20
    )
    (left_out,) = plan.unplaced
    assert left_out.rule == "NO_ROOM_BIG_ENOUGH"
    assert "campaign-launch" in left_out.words["en"] and "500" in left_out.words["en"]
    assert "需要可容納 500 人的場地" in left_out.words["zh_TW"]
    plan = plan_program(
        parse_program(
            base.replace(
                'duration_minutes = 180\nrequired = ["trainer-law"',
                'duration_minutes = 300\nrequired = ["trainer-law"',
            )
        ),
        time_limit=20,
    )
    assert {u.rule for u in plan.unplaced} == {"LONGER_THAN_OFFICE_HOURS"}
    assert all("eap-staff-training" in u.explanation for u in plan.unplaced)  # either language


def _events(data: bytes) -> dict[str, datetime]:
    parsed = icalendar.Calendar.from_ical(data)
    return {str(v["uid"]): v.decoded("dtstart") for v in parsed.walk("VEVENT")}


def read_in_two_libraries(data: bytes) -> dict[str, datetime]:
    """Each event's start by uid, as icalendar and vobject both read it
    (the checks any export must pass, in either language)."""
    by_icalendar = _events(data)
    by_vobject = {v.uid.value: v.dtstart.value for v in vobject.readOne(data.decode()).vevent_list}
    assert by_vobject == by_icalendar
    for start in by_icalendar.values():
        assert start.utcoffset() == timedelta(hours=8)
    return by_icalendar


def test_the_export_reads_in_two_libraries_and_keeps_its_uids(pingtung: Plan) -> None:
    data = export_ics(pingtung)
    by_icalendar = read_in_two_libraries(data)
    assert len(by_icalendar) == len(pingtung.events) == 19
    for event in pingtung.events:
        start = by_icalendar[event.uid]
        assert start.utcoffset() == timedelta(hours=8)
        assert start.replace(tzinfo=None) == event.start
    again = plan_program(parse_program(EXAMPLE.read_text()), time_limit=20)
    assert set(_events(export_ics(again))) == set(by_icalendar)


def test_exports_per_person_and_per_room(pingtung: Plan) -> None:
    mine = _events(export_ics(pingtung, person="group-counselor-1"))
    assert len(mine) == 6  # the six stress-group sessions
    room = _events(export_ics(pingtung, room="auditorium"))
    assert set(room) == {e.uid for e in pingtung.events if e.room == "auditorium"}


def _mistakes(text: str) -> list[str]:
    with pytest.raises(ProgramFileError) as refused:
        parse_program(text)
    return [str(m) for m in refused.value.mistakes]


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_bad_files_are_refused_pointing_at_key_and_line() -> None:
    base = EXAMPLE.read_text()
    role = base.replace('required = ["role:promotion-group"]', 'required = ["role:prom-group"]')
    (message,) = _mistakes(role)
    line = _line_of(role, "role:prom-group")
    assert message.startswith(f"activities[0].required[0] (line {line}): no one has the role")
    assert "'prom-group'" in message
    window = base.replace('windows = ["Feb-Apr"]', 'windows = ["Feb-Abr"]')
    (message,) = _mistakes(window)
    assert message.startswith(f"activities[0].windows[0] (line {_line_of(window, 'Feb-Abr')})")
    never = base.replace('cadence = "quarterly"', 'cadence = "quarterly"\nwindows = ["Jan-Jun"]')
    (message,) = _mistakes(never)
    assert message.startswith("activities[1].windows") and "never open in Q3, Q4" in message
    negative = base.replace("duration_minutes = 60\n", "duration_minutes = -60\n")
    (message,) = _mistakes(negative)
    line = _line_of(negative, "duration_minutes = -60")
    assert message == f"activities[3].duration_minutes (line {line}): must be 15 to 480 minutes"
    typo = base.replace("min_gap_days = 21", "min_gap_dayz = 21")
    (message,) = _mistakes(typo)
    assert message.startswith(f"activities[7].min_gap_dayz (line {_line_of(typo, 'dayz')})")
    (message,) = _mistakes(base.replace('[program]\nname = "', '[program]\nname = "x\n'))
    name_line = _line_of(base, "name = ")
    assert message.startswith(f"(file) (line {name_line})")


def test_many_mistakes_are_reported_together() -> None:
    text = """
[program]
name = "Broken"
year = 1999

[[people]]
id = "a"
busy = ["2027-13-01 09:00/10:00"]

[[activities]]
id = "x"
cadence = "fortnightly"
duration_minutes = 20000
required = ["nobody"]
"""
    keys = [m.split(" ")[0] for m in _mistakes(text)]
    assert keys == [
        "program.year",
        "people[0].busy[0]",
        "activities[0].cadence",
        "activities[0].duration_minutes",
        "activities[0].required[0]",
    ]


def test_a_program_value_is_plain(pingtung: Plan) -> None:
    assert isinstance(pingtung.program, Program)
    assert pingtung.program.year == 2027
