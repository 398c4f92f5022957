"""A case as the employee states it: submitted, read back, and disclosed
only on a legal reference or written consent."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.cases import Case, validate
from services.matcher.booking.store import BookingView, case_of, case_row, live, load_case, no_case
from services.matcher.optimization.instance import CaseKind
from services.matcher.orm import BookingRow, CaseRow
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import AlreadyExists, FailedPrecondition, PermissionDenied
from services.runtime.fields import FieldChecker
from services.runtime.policy import Scope


class CaseRecords:
    def __init__(self, engine: AsyncEngine, audit: AuditTrail | None = None) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._audit = audit

    async def submit_case(self, case: Case) -> tuple[Case, bool]:
        """Stores the case; a retry with the same content returns the stored one."""
        checker = FieldChecker()
        validate(case, checker)
        checker.raise_if_any()
        if policy.scope() is Scope.REFERRAL:
            if case.kind is not CaseKind.INVOLUNTARY:
                raise PermissionDenied("a supervisor submits involuntary referrals only")
            policy.mark_checked()
        else:
            policy.require_own(
                PermissionDenied("an employee submits only their own cases"),
                employee_id=case.employee_id,
            )
        try:
            return await self._store_case(case)
        except IntegrityError:
            # A concurrent submission of this case id inserted it first: look
            # again, and answer as to a retry.
            return await self._store_case(case)

    async def _store_case(self, case: Case) -> tuple[Case, bool]:
        async with self._sessions() as session, session.begin():
            existing = await session.get(CaseRow, case.case_id)
            if existing is not None:
                stored = case_of(existing)
                if not stored.same_request(case):
                    raise AlreadyExists("case_id names a different case")
                return stored, False
            stored = case.with_submitted_at(clock.now())
            session.add(case_row(stored))
        return stored, True

    async def get_case(self, case_id: str) -> tuple[Case, list[BookingView]]:
        now = clock.now()
        async with self._sessions() as session:
            case = await load_case(session, case_id)
            rows = list(
                await session.scalars(
                    select(BookingRow)
                    .where(BookingRow.case_id == case_id, live(now))
                    .order_by(BookingRow.start)
                )
            )
        policy.require_own(
            no_case(),
            employee_id=case.employee_id,
            counselor_ids=[row.counselor_id for row in rows],
        )
        if self._audit:
            await self._audit.record("read", f"case/{case_id}")
        return case, [BookingView.of(row, now) for row in rows]

    async def disclose(
        self, case_id: str, recipient: str, legal_reference: str, consent_reference: str
    ) -> tuple[Case, list[BookingView]]:
        """The case for someone outside the roles that may see it: only on a
        legal reference or the person's written consent, and audited."""
        checker = FieldChecker()
        checker.text(recipient, "recipient", 200)
        checker.require(bool(recipient.strip()), "recipient", "required")
        for field, value in (
            ("legal_reference", legal_reference),
            ("consent_reference", consent_reference),
        ):
            checker.text(value, field, 190)
        checker.require(
            bool(legal_reference.strip()) != bool(consent_reference.strip()),
            "legal_reference",
            "exactly one of legal_reference and consent_reference",
        )
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session:
            case = await load_case(session, case_id, own=True)
            rows = await session.scalars(
                select(BookingRow).where(BookingRow.case_id == case_id).order_by(BookingRow.start)
            )
            bookings = [BookingView.of(row, now) for row in rows]
        if self._audit is None:
            raise FailedPrecondition(
                "NO_AUDIT_TRAIL", "case", "disclosures need the audit trail to record them"
            )
        reference = (
            f"legal:{legal_reference.strip()}"
            if legal_reference.strip()
            else f"consent:{consent_reference.strip()}"
        )
        await self._audit.record("disclose", f"case/{case_id} to {recipient.strip()}", reference)
        return case, bookings
