"""The people directory HR keeps: which agency each employee works for and
in which staff category. A case takes its payer from here (or from the
employee's signed token), never from the caller's word: naming another
township's agency would spend its pool, another category a larger
entitlement (booking/records.py).

An import is all rows or none: every row is checked first, and the rows are
written in one transaction. Only pseudonymous ids are kept; names and
contacts are the contact directory's (directory.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.orm import StaffRow
from services.runtime import clock
from services.runtime.errors import Aborted
from services.runtime.fields import FieldChecker

MAX_PEOPLE = 100_000


@dataclass(frozen=True)
class StaffMember:
    employee_id: str
    agency_id: str
    staff_category: str


@dataclass(frozen=True)
class ImportCount:
    added: int
    changed: int
    removed: int
    unchanged: int


def check_people(people: Sequence[StaffMember], checker: FieldChecker) -> None:
    """Every row's fields, and each employee once."""
    checker.require(len(people) <= MAX_PEOPLE, "people", f"at most {MAX_PEOPLE:,} people")
    first_row: dict[str, int] = {}
    for n, person in enumerate(people):
        checker.identifier(person.employee_id, f"people[{n}].employee_id")
        checker.identifier(person.agency_id, f"people[{n}].agency_id")
        checker.identifier(person.staff_category, f"people[{n}].staff_category")
        seen = first_row.setdefault(person.employee_id, n)
        checker.require(
            seen == n, f"people[{n}].employee_id", f"the same employee as people[{seen}]"
        )


class StaffDirectory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def member(self, employee_id: str) -> StaffMember | None:
        async with self._sessions() as session:
            row = await session.get(StaffRow, employee_id)
        return (
            None if row is None else StaffMember(row.employee_id, row.agency_id, row.staff_category)
        )

    async def import_people(
        self, people: Sequence[StaffMember], replace_all: bool, dry_run: bool
    ) -> ImportCount:
        checker = FieldChecker()
        check_people(people, checker)
        checker.raise_if_any()
        try:
            return await self._import(people, replace_all, dry_run)
        except IntegrityError:
            # Another import added one of these people meanwhile: nothing of
            # this one was written.
            raise Aborted(
                "another import of the directory ran at the same time; run it again"
            ) from None

    async def _import(
        self, people: Sequence[StaffMember], replace_all: bool, dry_run: bool
    ) -> ImportCount:
        now = clock.now()
        wanted = {p.employee_id: p for p in people}
        async with self._sessions() as session, session.begin():
            stored = {
                row.employee_id: (row.agency_id, row.staff_category)
                for row in await session.scalars(select(StaffRow))
            }
            added = [p for p in people if p.employee_id not in stored]
            changed = [
                p
                for p in people
                if p.employee_id in stored
                and stored[p.employee_id] != (p.agency_id, p.staff_category)
            ]
            removed = [e for e in stored if e not in wanted] if replace_all else []
            count = ImportCount(
                added=len(added),
                changed=len(changed),
                removed=len(removed),
                unchanged=len(people) - len(added) - len(changed),
            )
            if dry_run:
                return count
            session.add_all(
                StaffRow(
                    employee_id=p.employee_id,
                    agency_id=p.agency_id,
                    staff_category=p.staff_category,
                    updated_at=now,
                )
                for p in added
            )
            for p in changed:
                await session.execute(
                    update(StaffRow)
                    .where(StaffRow.employee_id == p.employee_id)
                    .values(agency_id=p.agency_id, staff_category=p.staff_category, updated_at=now)
                )
            for start in range(0, len(removed), 500):
                await session.execute(
                    delete(StaffRow).where(StaffRow.employee_id.in_(removed[start : start + 500]))
                )
        return count
