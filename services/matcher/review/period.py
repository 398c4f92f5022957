"""The period a review covers: a quarter ("2026-Q4") or a fiscal year
("2026"; the fiscal year is the calendar year, DOMAIN.md), in office days.

Survey answers are kept by ISO week only (survey/rows.py), so their figures
cover the weeks whose Thursday falls in the period: the ISO rule for which
year a week belongs to, applied to quarters as well. A week is thereby in
exactly one quarter, and a year's review covers the same weeks as its four
quarters together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from services.rules.office_time import OFFICE_ZONE, iso_week

PATTERN = re.compile(r"(?P<year>\d{4})(?:-Q(?P<quarter>[1-4]))?")
EARLIEST_YEAR, LATEST_YEAR = 2000, 2199
THURSDAY = 4


@dataclass(frozen=True)
class Period:
    name: str
    first_day: date
    last_day: date  # included

    @property
    def start(self) -> datetime:
        """Its first moment, office time."""
        return datetime.combine(self.first_day, time(0), OFFICE_ZONE)

    @property
    def end(self) -> datetime:
        """The moment after it, office time."""
        return datetime.combine(self.last_day + timedelta(days=1), time(0), OFFICE_ZONE)

    @property
    def fiscal_year(self) -> int:
        return self.first_day.year

    @property
    def months(self) -> range:
        return range(self.first_day.month, self.last_day.month + 1)

    @property
    def weeks(self) -> tuple[str, str]:
        """The first and last ISO week ("2026-W40") whose Thursday is in it."""
        first = self.first_day + timedelta(days=(THURSDAY - self.first_day.isoweekday()) % 7)
        last = self.last_day - timedelta(days=(self.last_day.isoweekday() - THURSDAY) % 7)
        return iso_week(first).label, iso_week(last).label


def parse(text: str) -> Period | None:
    """The period `text` names, or None when it names none."""
    found = PATTERN.fullmatch(text.strip())
    if found is None:
        return None
    year = int(found["year"])
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        return None
    if found["quarter"] is None:
        return Period(text.strip(), date(year, 1, 1), date(year, 12, 31))
    quarter = int(found["quarter"])
    first = date(year, 3 * quarter - 2, 1)
    after = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    return Period(text.strip(), first, after - timedelta(days=1))
