"""The office calendar kept in the calendar service's database.

The shipped DGPA files seed years the database has not seen; an import
replaces one year whole.
"""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.calendar.orm import OfficeDayRow
from services.office_calendar import CalendarFileError, OfficeCalendar, OfficeDay, parse_dgpa_csv
from services.office_calendar.shipped import shipped_years
from services.runtime.errors import Aborted, InvalidArgument
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.calendar")

MAX_DAYS_PER_CALL = 731
IMPORT_ATTEMPTS = 3


class OfficeDays:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def seed_shipped_years(self) -> None:
        """Adds the shipped years the database lacks. Replicas starting
        together may race to do it; the loser finds the rows there."""
        try:
            async with self._sessions() as session, session.begin():
                known = set((await session.scalars(select(OfficeDayRow.year).distinct())).all())
                for year, days in shipped_years().items():
                    if year not in known:
                        session.add_all(_rows(year, days))
        except IntegrityError:
            log.info("office calendar already seeded by another replica")

    async def calendar(self, first: date, last: date) -> OfficeCalendar:
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(OfficeDayRow).where(
                        OfficeDayRow.year >= first.year, OfficeDayRow.year <= last.year
                    )
                )
            ).all()
        return OfficeCalendar(OfficeDay(r.day, r.open, r.note) for r in rows)

    async def between(self, start: str, end: str) -> list[tuple[OfficeDay, bool]]:
        """Each day from start to end, and whether an official calendar covers it."""
        checker = FieldChecker()
        first = checker.date(start, "start_date")
        last = checker.date(end, "end_date")
        if first and last:
            checker.require(first <= last, "end_date", "on or after start_date")
            checker.require(
                (last - first).days < MAX_DAYS_PER_CALL,
                "end_date",
                f"at most {MAX_DAYS_PER_CALL} days after start_date",
            )
        checker.raise_if_any()
        assert first is not None and last is not None
        calendar = await self.calendar(first, last)
        return [(day, calendar.known(day.day)) for day in calendar.between(first, last)]

    async def import_year(self, year: int, content: bytes) -> list[OfficeDay]:
        checker = FieldChecker()
        checker.require(1912 <= year <= 2200, "year", "a year between 1912 and 2200")
        checker.require(0 < len(content) <= 200_000, "csv_content", "1 byte to 200 kB")
        checker.raise_if_any()
        try:
            days = list(parse_dgpa_csv(content, year).values())
        except CalendarFileError as error:
            raise InvalidArgument.single("csv_content", str(error)) from None
        # A concurrent import of the same year may commit between our delete
        # and our insert (PostgreSQL, read committed): then replace its rows.
        for _ in range(IMPORT_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(delete(OfficeDayRow).where(OfficeDayRow.year == year))
                    session.add_all(_rows(year, days))
                return days
            except IntegrityError:
                continue
        raise Aborted("concurrent imports of this year kept winning; retry")


def _rows(year: int, days: list[OfficeDay]) -> list[OfficeDayRow]:
    return [OfficeDayRow(day=d.day, year=year, open=d.open, note=d.note) for d in days]
