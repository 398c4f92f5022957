"""The office's clock: the time zone the programmes keep, the day and the
ISO week a moment falls in (the weekly rule counts ISO weeks, Monday to
Sunday, on the office's wall clock), and the fiscal year (Budget Act art.
12: the calendar year)."""

from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

OFFICE_ZONE_NAME = "Asia/Taipei"
OFFICE_ZONE = ZoneInfo(OFFICE_ZONE_NAME)


class IsoWeek(NamedTuple):
    year: int
    week: int

    @property
    def label(self) -> str:
        """As the ledger stores it: "2027-W09"."""
        return f"{self.year}-W{self.week:02d}"


def local(moment: datetime) -> datetime:
    """An aware moment on the office's wall clock; a naive one is taken to
    be office time already."""
    return moment.astimezone(OFFICE_ZONE) if moment.tzinfo else moment


def local_day(moment: datetime | date) -> date:
    return local(moment).date() if isinstance(moment, datetime) else moment


def iso_week(moment: datetime | date) -> IsoWeek:
    """The ISO week of a moment (or a day) on the office's calendar."""
    year, week, _ = local_day(moment).isocalendar()
    return IsoWeek(year, week)


def fiscal_year_of(moment: datetime | date, start_month: int = 1) -> int:
    """The fiscal year a day belongs to; the calendar year unless configured."""
    day = local_day(moment)
    return day.year + (1 if start_month > 1 and day.month >= start_month else 0)
