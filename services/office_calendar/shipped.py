"""The office calendars shipped with the suite, one DGPA file a year in data/."""

from __future__ import annotations

from importlib import resources

from services.office_calendar.calendar import OfficeCalendar, OfficeDay
from services.office_calendar.dgpa_csv import parse_dgpa_csv


def shipped_years() -> dict[int, list[OfficeDay]]:
    years: dict[int, list[OfficeDay]] = {}
    folder = resources.files("services.office_calendar").joinpath("data")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".csv") and entry.name[:4].isdigit():
            year = int(entry.name[:4])
            years[year] = list(parse_dgpa_csv(entry.read_bytes(), year).values())
    return years


def load_shipped() -> OfficeCalendar:
    return OfficeCalendar(day for days in shipped_years().values() for day in days)
