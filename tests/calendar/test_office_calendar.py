"""The office calendar: the DGPA file parser and the calendar service's RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import grpc
import pytest

from eap.calendar.v1 import calendar_pb2 as pb
from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar.service import CalendarService
from services.office_calendar import CalendarFileError, load_shipped, parse_dgpa_csv
from services.runtime.server import start
from tests.conftest import Backend
from tests.quota.test_rpcs import details, refused

HEADER = "西元日期,星期,是否放假,備註\r\n"


def year_file(
    year: int, closed: dict[str, str] | None = None, make_up: tuple[str, ...] = ()
) -> str:
    """A whole year in the DGPA layout: weekends closed, plus `closed` days."""
    closed = closed or {}
    lines = [HEADER]
    day = date(year, 1, 1)
    while day.year == year:
        key = day.strftime("%Y%m%d")
        off = (day.weekday() >= 5 and key not in make_up) or key in closed
        note = closed.get(key, "補行上班" if key in make_up else "")
        lines.append(f"{key},{'一二三四五六日'[day.weekday()]},{2 if off else 0},{note}\r\n")
        day = day.fromordinal(day.toordinal() + 1)
    return "".join(lines)


def test_shipped_years_know_the_holidays() -> None:
    calendar = load_shipped()
    assert {2026, 2027} <= calendar.years
    assert not calendar.is_office_day(date(2027, 1, 1))  # founding day
    assert calendar.day(date(2027, 1, 1)).note == "開國紀念日"
    assert calendar.is_office_day(date(2027, 1, 4))
    assert not calendar.is_office_day(date(2027, 1, 9))  # a Saturday


def test_parser_accepts_what_published_files_do() -> None:
    text = year_file(2030, closed={"20300101": "開國紀念日", "20300102": ""}, make_up=("20300105",))
    duplicated = text.replace(HEADER, HEADER + text.splitlines(keepends=True)[1], 1)
    for content in (text.encode("utf-8-sig"), text.encode("big5"), duplicated.encode()):
        days = parse_dgpa_csv(content, 2030)
        assert len(days) == 365
        assert not days[date(2030, 1, 2)].open and days[date(2030, 1, 2)].note == ""
        assert days[date(2030, 1, 5)].make_up_workday


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (HEADER + "2030-01-01,二,2,\r\n", 2, "not YYYYMMDD"),
        (HEADER + "20300101,一,2,\r\n", 2, "is not a 一"),
        (HEADER + "20300101,二,1,\r\n", 2, "must be 0 or 2"),
        (HEADER + "20300101,二\r\n", 2, "at least 3 columns"),
        (HEADER + "20300101,二,2,\r\n20300101,二,0,\r\n", 3, "listed twice"),
        (HEADER + "20300101,二,2,\r\n", 0, "1 days listed; 2030 has 365"),
    ],
)
def test_parser_names_the_line_it_refuses(content: str, line: int, problem: str) -> None:
    with pytest.raises(CalendarFileError) as caught:
        parse_dgpa_csv(content.encode(), 2030)
    assert caught.value.line == line and problem in caught.value.problem


@pytest.fixture
async def calendar(backend: Backend) -> AsyncIterator[calendar_pb2_grpc.CalendarServiceAsyncStub]:
    server = await start([CalendarService()], backend.settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield calendar_pb2_grpc.CalendarServiceStub(channel)
    await server.stop(0)


async def test_list_office_days(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    days = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2026-12-30", end_date="2027-01-05")
        )
    ).days
    assert [(d.date, d.open) for d in days] == [
        ("2026-12-30", True),
        ("2026-12-31", True),
        ("2027-01-01", False),
        ("2027-01-02", False),
        ("2027-01-03", False),
        ("2027-01-04", True),
        ("2027-01-05", True),
    ]
    assert days[2].note == "開國紀念日" and days[2].from_official_calendar
    open_only = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(
                start_date="2027-01-01", end_date="2027-12-31", office_days_only=True
            )
        )
    ).days
    assert len(open_only) == 244
    future = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2031-01-01", end_date="2031-01-01")
        )
    ).days
    assert not future[0].from_official_calendar


async def test_import_replaces_a_year(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    content = year_file(2028, closed={"20280101": "開國紀念日"}, make_up=("20280108",))
    imported = await calendar.ImportOfficeCalendar(
        pb.ImportOfficeCalendarRequest(year=2028, csv_content=content.encode("big5"))
    )
    assert (imported.office_days, imported.closed_days) == (261, 105)
    saturday = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2028-01-08", end_date="2028-01-08")
        )
    ).days[0]
    assert saturday.open and saturday.make_up_workday and saturday.note == "補行上班"

    revised = year_file(2028, closed={"20280101": "開國紀念日", "20280103": "調整放假"})
    await calendar.ImportOfficeCalendar(
        pb.ImportOfficeCalendarRequest(year=2028, csv_content=revised.encode())
    )
    days = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2028-01-03", end_date="2028-01-08")
        )
    ).days
    assert not days[0].open and not days[-1].open  # the make-up day is gone with the old file


async def test_bad_requests(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    error = await refused(
        calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2027-13-01", end_date="2027-01-01")
        )
    )
    assert details(error)["BadRequest"].field_violations[0].field == "start_date"  # type: ignore[attr-defined]
    error = await refused(
        calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2020-01-01", end_date="2027-01-01")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await refused(
        calendar.ImportOfficeCalendar(
            pb.ImportOfficeCalendarRequest(year=2029, csv_content=b"\xff\xfe garbage")
        )
    )
    violation = details(error)["BadRequest"].field_violations[0]  # type: ignore[attr-defined]
    assert violation.field == "csv_content"
    # The failed import left the year as it was: unknown.
    day = (
        await calendar.ListOfficeDays(
            pb.ListOfficeDaysRequest(start_date="2029-01-01", end_date="2029-01-01")
        )
    ).days[0]
    assert not day.from_official_calendar
