"""Parser for the DGPA office-calendar CSV, tolerant of how published files vary.

Published files come as UTF-8 with or without a byte-order mark, or Big5;
some list 1 January twice; some days off have an empty note. All of that is
accepted. What is refused is named with its line number.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date

from services.office_calendar.calendar import OfficeDay

_WEEKDAYS = "一二三四五六日"
_HEADER_DATE = "西元日期"


@dataclass
class CalendarFileError(Exception):
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "big5", "cp950"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CalendarFileError(1, "neither UTF-8 nor Big5 text")


def parse_dgpa_csv(content: bytes | str, year: int | None = None) -> dict[date, OfficeDay]:
    """Every day of the file; with `year`, also checks the file is that whole year."""
    text = decode(content) if isinstance(content, bytes) else content.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as error:  # a NUL, or a line break inside a field
        raise CalendarFileError(reader.line_num, str(error).split(" - ")[0]) from None
    days: dict[date, OfficeDay] = {}
    for number, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and row[0].strip() == _HEADER_DATE:
            continue
        if len(row) < 3:
            raise CalendarFileError(number, "expected at least 3 columns: date, weekday, closed")
        raw_date, weekday, closed = (cell.strip() for cell in row[:3])
        note = row[3].strip() if len(row) > 3 else ""
        try:
            day = date(int(raw_date[:4]), int(raw_date[4:6]), int(raw_date[6:8]))
            if len(raw_date) != 8:
                raise ValueError
        except ValueError:
            raise CalendarFileError(number, f"date {raw_date!r} is not YYYYMMDD") from None
        if weekday and weekday in _WEEKDAYS and _WEEKDAYS.index(weekday) != day.weekday():
            raise CalendarFileError(number, f"{day} is not a {weekday}")
        if closed not in ("0", "2"):
            raise CalendarFileError(number, f"是否放假 must be 0 or 2, not {closed!r}")
        entry = OfficeDay(day=day, open=closed == "0", note=note)
        if day in days and days[day] != entry:
            raise CalendarFileError(number, f"{day} is listed twice, differently")
        days[day] = entry
    if year is not None:
        wrong = [d for d in days if d.year != year]
        if wrong:
            raise CalendarFileError(0, f"{wrong[0]} is outside {year}")
        expected = (date(year + 1, 1, 1) - date(year, 1, 1)).days
        if len(days) != expected:
            raise CalendarFileError(0, f"{len(days)} days listed; {year} has {expected}")
    return days
