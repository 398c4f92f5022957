"""A case as the employee states it: submitted, read back, and disclosed
only on a legal reference or written consent."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.cases import Case, validate
from services.matcher.booking.store import BookingView, case_of, case_row, live, load_case, no_case
from services.matcher.optimization.instance import CaseKind
from services.matcher.orm import BookingRow, CaseRow
from services.matcher.registry.staff import StaffDirectory, StaffMember
from services.rules.codes import RuleCode
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.auth import Identity, Role, current_identity
from services.runtime.errors import AlreadyExists, FailedPrecondition, PermissionDenied
from services.runtime.fields import FieldChecker
from services.runtime.policy import Scope

# Stands for what the server fills in while the rest of a case is checked.
_FILLED_IN = "filled-in"
SERVER_ID_PREFIX = "case-"


def case_id_for(submitter: Identity, request_id: str) -> str:
    """The case id of `submitter`'s submission `request_id`: the same for a
    retry, another for anyone else's equal key, so that a key names
    nobody else's case."""
    digest = hashlib.sha256(f"{submitter.role}\0{submitter.subject}\0{request_id}".encode())
    return f"{SERVER_ID_PREFIX}{digest.hexdigest()[:32]}"


class CaseRecords:
    def __init__(
        self, engine: AsyncEngine, staff: StaffDirectory, audit: AuditTrail | None = None
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._staff = staff
        self._audit = audit

    async def submit_case(self, case: Case, request_id: str) -> tuple[Case, bool]:
        """Stores the case, paid by the employee's agency and category as the
        directory (or their token) has them; a retry with the same content
        returns the stored one.

        An administrator, who sees every case anyway, may name it (their own
        reference); anyone else's case gets the server's id for their
        `request_id`, so that no key of theirs can run into, and so reveal,
        somebody else's case."""
        checker = FieldChecker()
        named = bool(case.case_id)
        if named:
            checker.require(
                policy.scope() is Scope.ANY,
                "case.case_id",
                "set by the server: leave it empty (request_id names the submission)",
            )
            checker.require(
                not case.case_id.startswith(SERVER_ID_PREFIX),
                "case.case_id",
                f"ids starting {SERVER_ID_PREFIX!r} are the server's",
            )
        else:
            checker.identifier(request_id, "request_id")
        validate(
            replace(
                case,
                case_id=case.case_id or _FILLED_IN,
                agency_id=case.agency_id or _FILLED_IN,
                staff_category=case.staff_category or _FILLED_IN,
            ),
            checker,
        )
        checker.raise_if_any()
        if policy.scope() is Scope.REFERRAL:
            if case.kind is not CaseKind.INVOLUNTARY:
                raise PermissionDenied("a supervisor submits involuntary referrals only")
            if case.agency_id or case.staff_category:
                # Tried against the directory, they would tell a supervisor
                # where someone works and in which category.
                raise PermissionDenied(
                    "a referral names no agency or staff category: the people directory's apply"
                )
            policy.mark_checked()
        else:
            policy.require_own(
                PermissionDenied("an employee submits only their own cases"),
                employee_id=case.employee_id,
            )
        payer = await self._payer(case.employee_id)
        for field, stated, known in (
            ("case.agency_id", case.agency_id, payer.agency_id),
            ("case.staff_category", case.staff_category, payer.staff_category),
        ):
            if stated and stated != known:
                raise PermissionDenied(
                    f"{field} must be the employee's own, as the people directory has it "
                    "(or leave it empty)"
                )
        case = replace(
            case,
            case_id=case.case_id if named else case_id_for(current_identity(), request_id),
            agency_id=payer.agency_id,
            staff_category=payer.staff_category,
        )
        try:
            return await self._store_case(case)
        except IntegrityError:
            # A concurrent submission of this case id inserted it first: look
            # again, and answer as to a retry.
            return await self._store_case(case)

    async def _payer(self, employee_id: str) -> StaffMember:
        """Who pays for `employee_id`'s sessions: the people directory's
        entry, else the employee's own token's claims."""
        member = await self._staff.member(employee_id)
        if member is not None:
            return member
        me = current_identity()
        if (
            me.role is Role.EMPLOYEE
            and me.subject == employee_id
            and me.agency
            and me.staff_category
        ):
            return StaffMember(employee_id, me.agency, me.staff_category)
        raise FailedPrecondition(
            RuleCode.NOT_IN_DIRECTORY,
            "employee",
            "the employee is not in the people directory: HR imports it (ImportPeople)",
        )

    async def _store_case(self, case: Case) -> tuple[Case, bool]:
        async with self._sessions() as session, session.begin():
            existing = await session.get(CaseRow, case.case_id)
            if existing is not None:
                stored = case_of(existing)
                # The payer is the directory's as it stood at submission: a
                # retry after HR moved the person is still the same request.
                asked = replace(
                    case, agency_id=stored.agency_id, staff_category=stored.staff_category
                )
                if not stored.same_request(asked):
                    raise AlreadyExists("this case id or request_id names a different case")
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

    async def list_cases(
        self, employee_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[tuple[Case, list[BookingView]]]:
        """Cases newest first (after the page key `after`), each with every
        booking it had: `employee_id`'s, or every case for an administrator
        who names nobody. An employee lists only their own."""
        me = current_identity()
        if policy.scope() is Scope.OWN:
            employee_id = employee_id or me.subject
        if employee_id:
            checker = FieldChecker()
            checker.identifier(employee_id, "employee_id")
            checker.raise_if_any()
            policy.require_own(
                PermissionDenied("an employee lists only their own cases"), employee_id=employee_id
            )
        else:
            policy.mark_checked()  # scope ANY: an administrator's whole list
        query = select(CaseRow).order_by(CaseRow.submitted_at.desc(), CaseRow.case_id.desc())
        if employee_id:
            query = query.where(CaseRow.employee_id == employee_id)
        if after is not None:
            moment, case_id = after
            query = query.where(
                or_(
                    CaseRow.submitted_at < moment,
                    and_(CaseRow.submitted_at == moment, CaseRow.case_id < case_id),
                )
            )
        now = clock.now()
        async with self._sessions() as session:
            rows = list(await session.scalars(query.limit(limit)))
            ids = [row.case_id for row in rows]
            bookings = (
                list(
                    await session.scalars(
                        select(BookingRow)
                        .where(BookingRow.case_id.in_(ids))
                        .order_by(BookingRow.start, BookingRow.booking_id)
                    )
                )
                if ids
                else []
            )
        by_case: dict[str, list[BookingView]] = {}
        for booking in bookings:
            by_case.setdefault(booking.case_id, []).append(BookingView.of(booking, now))
        if self._audit:
            await self._audit.record_reads("cases", ids)
        return [(case_of(row), by_case.get(row.case_id, [])) for row in rows]

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
