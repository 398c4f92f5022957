"""Office days as a plain value: open or closed, and why."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class OfficeDay:
    day: date
    open: bool
    note: str = ""

    @property
    def make_up_workday(self) -> bool:
        return self.open and self.day.weekday() >= 5


class OfficeCalendar:
    """Known years come from the DGPA files; other years fall back to
    weekdays open, weekends closed, and say so (`known`)."""

    def __init__(self, days: Iterable[OfficeDay] = ()) -> None:
        self._days = {d.day: d for d in days}
        self._years = {d.year for d in self._days}

    @property
    def years(self) -> set[int]:
        return set(self._years)

    def known(self, day: date) -> bool:
        return day.year in self._years

    def day(self, day: date) -> OfficeDay:
        listed = self._days.get(day)
        if listed is not None:
            return listed
        return OfficeDay(day=day, open=day.weekday() < 5, note="")

    def is_office_day(self, day: date) -> bool:
        return self.day(day).open

    def between(self, first: date, last: date) -> Iterator[OfficeDay]:
        day = first
        while day <= last:
            yield self.day(day)
            day += timedelta(days=1)
