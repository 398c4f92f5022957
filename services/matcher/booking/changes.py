"""A case changed or withdrawn by its owner (or an administrator).

An update changes what the case asks for from now on (cases.UPDATABLE); its
live bookings stand as booked, so a change that one of them would no longer
fit is refused (CASE_BOOKINGS_CONFLICT, naming the booking) rather than
leaving a booking the case would not have had: the owner cancels or moves it
first. A withdrawal closes the case: it is written down first, so that no
new slot is offered, held or confirmed for it, then its holds are released
and its booked sessions that have not started are cancelled through the
saga, their quota given back. Sessions that have started stay, to be
completed. Both are audited, naming the case and (for an update) the fields
changed, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.cases import UPDATABLE, Case, require_open, validate
from services.matcher.booking.saga import BookingSaga
from services.matcher.booking.state import BookingState as S
from services.matcher.booking.store import (
    BookingView,
    case_of,
    case_row,
    live,
    no_case,
)
from services.matcher.orm import BookingRow, CaseRow
from services.matcher.registry.counselors import Modality
from services.rules.codes import RuleCode
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.fields import FieldChecker

# Bookings a withdrawal gives up: holds, and sessions booked (or a step on
# them under way) that have not started.
_GIVEN_UP = (S.HELD, S.CONFIRMING, S.BOOKED, S.MOVING, S.CANCELLING)


class CaseChanges:
    def __init__(
        self, engine: AsyncEngine, bookings: BookingSaga, audit: AuditTrail | None = None
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._bookings = bookings
        self._audit = audit

    async def update(self, case_id: str, changes: Mapping[str, object]) -> Case:
        """The case with `changes` (field name to new value, names among
        cases.UPDATABLE) applied, checked as a submission is."""
        if not changes or not set(changes) <= set(UPDATABLE):
            raise InvalidArgument.single("update_mask", f"one or more of {', '.join(UPDATABLE)}")
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await session.get(CaseRow, case_id, with_for_update=True)
            if row is None:
                raise no_case()
            policy.require_own(no_case(), employee_id=row.employee_id)
            stored = case_of(row)
            require_open(stored)
            updated = replace(stored, **changes)  # type: ignore[arg-type]
            checker = FieldChecker()
            validate(updated, checker)
            checker.raise_if_any()
            bookings = list(
                await session.scalars(
                    select(BookingRow)
                    .where(BookingRow.case_id == case_id, live(now))
                    .order_by(BookingRow.start, BookingRow.booking_id)
                )
            )
            _check_bookings(updated, bookings, now)
            fresh = case_row(updated)
            for name in changes:
                setattr(row, name, getattr(fresh, name))
        if self._audit:
            await self._audit.record("update", f"case/{case_id}", ",".join(sorted(changes)))
        return updated

    async def withdraw(self, case_id: str, reason: str) -> tuple[Case, list[BookingView]]:
        """Closes the case and gives up what it holds and has booked ahead;
        again, it finishes what a failure left and answers the same."""
        checker = FieldChecker()
        checker.text(reason, "reason", 200)
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session, session.begin():
            row = await session.get(CaseRow, case_id, with_for_update=True)
            if row is None:
                raise no_case()
            policy.require_own(no_case(), employee_id=row.employee_id)
            if row.withdrawn_at is None:
                row.withdrawn_at = now
            case = case_of(row)
        async with self._sessions() as session:
            ahead = list(
                await session.scalars(
                    select(BookingRow.booking_id).where(
                        BookingRow.case_id == case_id,
                        BookingRow.state.in_([s.value for s in _GIVEN_UP]),
                        BookingRow.start > now,
                    )
                )
            )
        for booking_id in ahead:
            await self._bookings.cancel(booking_id, reason)  # the saga's own step
        if self._audit:
            await self._audit.record("withdraw", f"case/{case_id}")
        async with self._sessions() as session:
            rows = await session.scalars(
                select(BookingRow)
                .where(BookingRow.case_id == case_id)
                .order_by(BookingRow.start, BookingRow.booking_id)
            )
            bookings = [BookingView.of(r, clock.now()) for r in rows]
        return case, bookings


def _check_bookings(case: Case, bookings: list[BookingRow], now: datetime) -> None:
    """CASE_BOOKINGS_CONFLICT unless every live booking still fits the
    case: as many sessions wanted as it has live or done, and each one to
    come in a modality the case accepts, with a counselor it does not
    exclude, inside its availability and of its length."""
    if len(bookings) > case.sessions_wanted:
        raise _conflict(
            "case", f"the case has {len(bookings)} sessions booked or done: cancel some first"
        )
    for booking in bookings:
        if booking.start <= now:
            continue  # begun or done: the change is for what is to come
        fits = (
            Modality(booking.modality) in case.modalities
            and booking.counselor_id not in case.excluded_counselor_ids
            and booking.minutes == case.minutes
            and any(r.holds(booking.start, booking.end) for r in case.availability)
        )
        if not fits:
            raise _conflict(
                f"booking/{booking.booking_id}",
                "a session already booked would not fit the changed case: cancel or move it first",
            )


def _conflict(subject: str, message: str) -> FailedPrecondition:
    return FailedPrecondition(RuleCode.CASE_BOOKINGS_CONFLICT, subject, message)
