"""The quota use cases: each one transaction, each change a ledger entry.

The gRPC servicer calls these with plain commands and gets plain results;
nothing here knows about gRPC.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.quota import metrics, orm
from services.quota.disclosure import UsageRow, suppress_small_cells
from services.quota.domain import (
    MAX_HOLD_TTL_SECONDS,
    AccountKey,
    AccountKind,
    Balance,
    HoldState,
    Share,
    Totals,
    check_fiscal_year,
    check_session_minutes,
    check_share,
    require_room,
)
from services.quota.holds.queue import HoldBatcher
from services.quota.holds.requests import (
    CommitOp,
    HoldView,
    MoveOp,
    ReleaseOp,
    Reservation,
    ReserveOp,
)
from services.quota.store import QuotaStore
from services.rules.codes import RuleCode
from services.rules.sessions import MAX_SESSION_MINUTES
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.auth import Role, current_identity
from services.runtime.database import is_retryable
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.quota")
T = TypeVar("T")


@dataclass(frozen=True)
class ReserveCommand:
    idempotency_key: str
    employee_id: str
    agency_id: str
    staff_category: str
    provider_id: str
    session_start: datetime | None
    minutes: int
    hold_ttl_seconds: int = 0
    booking_ref: str = ""
    share: Share | None = None  # a group session's share; None for an individual one


@dataclass(frozen=True)
class GrantCommand:
    idempotency_key: str
    account: AccountKey
    minutes: int
    approval_reference: str
    approver: str
    reason: str


def _fingerprint(command: object) -> str:
    """A digest of a request's fields: the same request always gives the
    same one (fields are plain values, datetimes and account keys)."""
    if is_dataclass(command) and not isinstance(command, type):
        command = tuple(getattr(command, field.name) for field in fields(command))
    return hashlib.sha256(repr(command).encode()).hexdigest()


def _require_reader(key: AccountKey | None, refusal: ServiceError) -> None:
    """The caller's scope on an account (policy.py): an employee reads only
    their own, HR no employee's; `None` is every account, individuals' too."""
    if key is None:
        policy.require_own(refusal, employee_id="*")  # "*" is nobody's id
    elif key.kind is AccountKind.EMPLOYEE:
        policy.require_own(refusal, employee_id=key.owner_id)
    else:
        policy.require_own(refusal)


def _balance(key: AccountKey, account: orm.Account) -> Balance:
    return Balance(key, Totals(account.entitled, account.held, account.spent))


class QuotaLedger:
    def __init__(
        self,
        engine: AsyncEngine,
        default_hold_ttl_seconds: int = 900,
        audit: AuditTrail | None = None,
        max_queue_seconds: float = 1.0,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._batcher = HoldBatcher(engine, default_hold_ttl_seconds, max_queue_seconds)
        self._audit = audit

    async def close(self) -> None:
        await self._batcher.close()

    async def _transaction(
        self, actor: str, work: Callable[[QuotaStore], Awaitable[T]], attempts: int = 5
    ) -> T:
        for attempt in range(attempts):
            session: AsyncSession
            async with self._sessions() as session:
                try:
                    async with session.begin():
                        return await work(QuotaStore(session, actor))
                except DBAPIError as error:
                    if attempt + 1 == attempts or not is_retryable(error):
                        raise
                    log.warning("transaction retried", extra={"attempt": attempt + 1})
        raise AssertionError("unreachable")

    # -- holds ---------------------------------------------------------------

    async def reserve(self, command: ReserveCommand, actor: str) -> Reservation:
        checker = FieldChecker()
        checker.idempotency_key(command.idempotency_key, "idempotency_key")
        checker.identifier(command.employee_id, "employee_id")
        checker.identifier(command.agency_id, "agency_id")
        checker.identifier(command.staff_category, "staff_category")
        checker.identifier(command.provider_id, "provider_id")
        checker.require(command.session_start is not None, "session_start", "required")
        check_session_minutes(checker, command.minutes, "minutes")
        checker.require(
            0 <= command.hold_ttl_seconds <= MAX_HOLD_TTL_SECONDS,
            "hold_ttl_seconds",
            f"0 (the default) to {MAX_HOLD_TTL_SECONDS} seconds",
        )
        checker.text(command.booking_ref, "booking_ref", 128)
        if command.share is not None:
            check_share(checker, command.share, "group")
        checker.raise_if_any()
        assert command.session_start is not None
        fingerprint = _fingerprint(command)

        def submit() -> Awaitable[Reservation]:
            assert command.session_start is not None
            return self._batcher.submit(
                ReserveOp(
                    actor=actor,
                    future=self._batcher.new_future(),
                    idempotency_key=command.idempotency_key,
                    fingerprint=fingerprint,
                    employee_id=command.employee_id,
                    agency_id=command.agency_id,
                    staff_category=command.staff_category,
                    provider_id=command.provider_id,
                    session_start=command.session_start,
                    minutes=command.minutes,
                    ttl_seconds=command.hold_ttl_seconds,
                    booking_ref=command.booking_ref,
                    share=command.share or Share(),
                )
            )

        try:
            result: Reservation = await submit()
        except FailedPrecondition as refusal:
            # Holds past their TTL that the sweeper has not reached yet would
            # refuse this request unfairly: give them back, then try again.
            keys = ReserveOp.keys_of(
                command.employee_id, command.provider_id, command.agency_id, command.session_start
            )
            if refusal.rule not in _LIMIT_RULES or not await self._expire(keys):
                raise
            result = await submit()
        return result

    async def commit(self, hold_id: str, minutes: int, completed: bool, actor: str) -> HoldView:
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.require(
            minutes == 0 or 1 <= minutes <= MAX_SESSION_MINUTES,
            "minutes",
            f"0 (all held minutes) or 1-{MAX_SESSION_MINUTES}",
        )
        checker.raise_if_any()
        hold: HoldView = await self._batcher.submit(
            CommitOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                minutes=minutes,
                completed=completed,
            )
        )
        return hold

    async def move(
        self,
        hold_id: str,
        employee_id: str,
        provider_id: str,
        session_start: datetime | None,
        minutes: int,
        booking_ref: str,
        actor: str,
    ) -> HoldView:
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.identifier(employee_id, "employee_id")
        checker.identifier(provider_id, "provider_id")
        checker.require(session_start is not None, "session_start", "required")
        check_session_minutes(checker, minutes, "minutes")
        checker.text(booking_ref, "booking_ref", 128)
        checker.raise_if_any()
        assert session_start is not None
        hold: HoldView = await self._batcher.submit(
            MoveOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                employee_id=employee_id,
                provider_id=provider_id,
                session_start=session_start,
                minutes=minutes,
                booking_ref=booking_ref,
            )
        )
        return hold

    async def release(
        self, hold_id: str, reason: str, actor: str, booking_cancelled: bool = False
    ) -> HoldView:
        checker = FieldChecker()
        checker.require(bool(hold_id) and len(hold_id) <= 32, "hold_id", "required")
        checker.text(reason, "reason")
        checker.raise_if_any()
        hold: HoldView = await self._batcher.submit(
            ReleaseOp(
                actor=actor,
                future=self._batcher.new_future(),
                hold_id=hold_id,
                reason=reason,
                booking_cancelled=booking_cancelled,
            )
        )
        return hold

    async def expire_due(self, limit: int = 200) -> int:
        """Gives back holds past their TTL; returns how many. Safe on many replicas."""
        expired = await self._batcher.expire_due(limit)
        metrics.HOLDS_EXPIRED.inc(expired)
        return expired

    async def _expire(self, accounts: Sequence[AccountKey]) -> int:
        """Gives back the due holds on these accounts; returns how many."""
        expired = await self._batcher.expire_due(1000, accounts)
        metrics.HOLDS_EXPIRED.inc(expired)
        return expired

    # -- grants, budgets, contracts -------------------------------------------

    async def grant(self, command: GrantCommand, actor: str) -> tuple[str, Balance]:
        checker = FieldChecker()
        checker.idempotency_key(command.idempotency_key, "idempotency_key")
        checker.require(
            command.account.kind in (AccountKind.EMPLOYEE, AccountKind.PROVIDER),
            "account.kind",
            "grants go to an employee or a provider",
        )
        checker.identifier(command.account.owner_id, "account.id")
        check_fiscal_year(checker, command.account.fiscal_year, "account.fiscal_year")
        checker.require(0 < command.minutes <= 100_000, "minutes", "1 to 100000 minutes")
        checker.identifier(command.approval_reference, "approval_reference")
        checker.require(
            bool(command.approver) and len(command.approver) <= 128, "approver", "required"
        )
        checker.require(bool(command.reason), "reason", "required")
        checker.text(command.reason, "reason")
        checker.raise_if_any()
        fingerprint = _fingerprint(command)
        key = command.account

        async def work(store: QuotaStore) -> tuple[str, Balance]:
            previous = await store.idempotency("grant", command.idempotency_key)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise AlreadyExists("idempotency_key was used for a different grant")
                account = await store.get_account(key)
                assert account is not None
                return previous.result_id, _balance(key, account)
            account = await store.get_account(key, lock=True)
            if account is None:
                raise NotFound(
                    f"no {key.kind.value} account for {key.fiscal_year}: an employee's opens "
                    "with the first reservation, a provider's with its contract"
                )
            grant_id = uuid.uuid4().hex
            store.session.add(
                orm.Grant(
                    grant_id=grant_id,
                    account_kind=key.kind.value,
                    account_owner=key.owner_id,
                    fiscal_year=key.fiscal_year,
                    minutes=command.minutes,
                    approval_reference=command.approval_reference,
                    approver=command.approver,
                    reason=command.reason,
                    actor=actor,
                    created_at=clock.now(),
                )
            )
            store.change(key, account, "GRANT", grant_id, command.reason, entitled=command.minutes)
            store.remember("grant", command.idempotency_key, fingerprint, grant_id)
            return grant_id, _balance(key, account)

        return await self._retrying_unique(actor, work)

    async def _retrying_unique(self, actor: str, work: Callable[[QuotaStore], Awaitable[T]]) -> T:
        """Runs `work`; if a concurrent twin won a unique key, runs it again to
        see the twin's result."""
        try:
            return await self._transaction(actor, work)
        except IntegrityError:
            return await self._transaction(actor, work)

    async def top_up(
        self,
        idempotency_key: str,
        agency_id: str,
        year: int,
        amount: int,
        reason: str,
        actor: str,
    ) -> Balance:
        checker = FieldChecker()
        checker.idempotency_key(idempotency_key, "idempotency_key")
        checker.identifier(agency_id, "agency_id")
        check_fiscal_year(checker, year, "fiscal_year")
        checker.require(0 < amount <= 10**12, "amount_ntd", "positive, at most 10^12")
        checker.require(bool(reason), "reason", "required")
        checker.text(reason, "reason")
        checker.raise_if_any()
        fingerprint = _fingerprint((agency_id, year, amount, reason))
        key = AccountKey(AccountKind.AGENCY, agency_id, year)

        async def work(store: QuotaStore) -> Balance:
            if await store.agency(agency_id) is None:
                raise NotFound("agency_id names no agency")
            previous = await store.idempotency("topup", idempotency_key)
            account = await store.get_account(key, lock=True)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise AlreadyExists("idempotency_key was used for a different top-up")
                assert account is not None
                return _balance(key, account)
            reference = uuid.uuid4().hex
            if account is None:
                account = store.open_account(
                    key, amount, reason, reference, ledger_kind="BUDGET_TOPUP"
                )
            else:
                store.change(key, account, "BUDGET_TOPUP", reference, reason, entitled=amount)
            store.remember("topup", idempotency_key, fingerprint, reference)
            return _balance(key, account)

        return await self._retrying_unique(actor, work)

    async def transfer(
        self,
        idempotency_key: str,
        from_agency: str,
        to_agency: str,
        year: int,
        amount: int,
        reason: str,
        actor: str,
    ) -> tuple[Balance, Balance]:
        checker = FieldChecker()
        checker.idempotency_key(idempotency_key, "idempotency_key")
        checker.identifier(from_agency, "from_agency_id")
        checker.identifier(to_agency, "to_agency_id")
        checker.require(from_agency != to_agency, "to_agency_id", "differs from from_agency_id")
        check_fiscal_year(checker, year, "fiscal_year")
        checker.require(0 < amount <= 10**12, "amount_ntd", "positive, at most 10^12")
        checker.require(bool(reason), "reason", "required")
        checker.text(reason, "reason")
        checker.raise_if_any()
        fingerprint = _fingerprint((from_agency, to_agency, year, amount, reason))
        giver = AccountKey(AccountKind.AGENCY, from_agency, year)
        taker = AccountKey(AccountKind.AGENCY, to_agency, year)

        async def work(store: QuotaStore) -> tuple[Balance, Balance]:
            for agency_id, name in ((from_agency, "from_agency_id"), (to_agency, "to_agency_id")):
                if await store.agency(agency_id) is None:
                    raise NotFound(f"{name} names no agency")
            previous = await store.idempotency("transfer", idempotency_key)
            accounts = await store.lock_accounts([giver, taker])
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise AlreadyExists("idempotency_key was used for a different transfer")
                return _balance(giver, accounts[giver]), _balance(taker, accounts[taker])
            if giver not in accounts:
                raise FailedPrecondition(
                    RuleCode.NO_BUDGET_POOL, giver.subject, f"agency has no budget pool for {year}"
                )
            require_room(giver, _totals(accounts[giver]), amount)
            reference = uuid.uuid4().hex
            store.change(
                giver, accounts[giver], "TRANSFER_OUT", reference, reason, entitled=-amount
            )
            if taker in accounts:
                store.change(
                    taker, accounts[taker], "TRANSFER_IN", reference, reason, entitled=amount
                )
            else:
                accounts[taker] = store.open_account(
                    taker, amount, reason, reference, ledger_kind="TRANSFER_IN"
                )
            store.remember("transfer", idempotency_key, fingerprint, reference)
            return _balance(giver, accounts[giver]), _balance(taker, accounts[taker])

        return await self._retrying_unique(actor, work)

    async def upsert_agency(
        self, agency_id: str, organisation: str, display_name: str, actor: str
    ) -> None:
        checker = FieldChecker()
        checker.identifier(agency_id, "agency_id")
        checker.identifier(organisation, "organisation")
        checker.require(
            0 < len(display_name) <= 200, "display_name", "required, at most 200 characters"
        )
        checker.raise_if_any()

        async def work(store: QuotaStore) -> None:
            await store.session.merge(
                orm.Agency(
                    agency_id=agency_id, organisation=organisation, display_name=display_name
                )
            )

        await self._retrying_unique(actor, work)
        self._batcher.reference.clear()

    async def set_contract(
        self, provider_id: str, year: int, rate: int, cap_minutes: int, reason: str, actor: str
    ) -> Balance:
        checker = FieldChecker()
        checker.identifier(provider_id, "provider_id")
        check_fiscal_year(checker, year, "fiscal_year")
        checker.require(0 < rate <= 1_000_000, "hourly_rate_ntd", "1 to 1000000")
        checker.require(0 < cap_minutes <= 10_000_000, "cap_minutes", "1 to 10000000")
        checker.text(reason, "reason")
        checker.raise_if_any()
        key = AccountKey(AccountKind.PROVIDER, provider_id, year)

        async def work(store: QuotaStore) -> Balance:
            await store.session.merge(
                orm.ProviderContract(
                    provider_id=provider_id, fiscal_year=year, hourly_rate_ntd=rate
                )
            )
            account = await store.get_account(key, lock=True)
            reference = uuid.uuid4().hex
            if account is None:
                account = store.open_account(
                    key, cap_minutes, reason or "contract", reference, ledger_kind="CAP_SET"
                )
            elif account.entitled != cap_minutes:
                if cap_minutes < account.held + account.spent:
                    raise FailedPrecondition(
                        RuleCode.CAP_BELOW_USE,
                        key.subject,
                        f"cap {cap_minutes} is below the {account.held + account.spent} "
                        "minutes already held or spent",
                    )
                store.change(
                    key,
                    account,
                    "CAP_SET",
                    reference,
                    reason or "contract",
                    entitled=cap_minutes - account.entitled,
                )
            return _balance(key, account)

        result = await self._retrying_unique(actor, work)
        self._batcher.reference.clear()
        return result

    async def contract(self, provider_id: str, year: int) -> tuple[int, Balance]:
        """The provider's hourly rate and cap balance for the year."""
        checker = FieldChecker()
        checker.identifier(provider_id, "provider_id")
        check_fiscal_year(checker, year, "fiscal_year")
        checker.raise_if_any()
        key = AccountKey(AccountKind.PROVIDER, provider_id, year)
        async with self._sessions() as session:
            contract = await session.get(orm.ProviderContract, (provider_id, year))
            account = await QuotaStore(session, "").get_account(key)
        if contract is None or account is None:
            raise NotFound(f"no contract for this provider in {year}")
        return contract.hourly_rate_ntd, _balance(key, account)

    async def set_policy(
        self, organisation: str, staff_category: str, year: int, minutes: int, actor: str
    ) -> None:
        checker = FieldChecker()
        checker.identifier(organisation, "organisation")
        checker.identifier(staff_category, "staff_category")
        check_fiscal_year(checker, year, "fiscal_year")
        checker.require(0 <= minutes <= 100_000, "minutes", "0 to 100000")
        checker.raise_if_any()

        async def work(store: QuotaStore) -> None:
            await store.session.merge(
                orm.EntitlementPolicy(
                    organisation=organisation,
                    staff_category=staff_category,
                    fiscal_year=year,
                    minutes=minutes,
                )
            )

        await self._retrying_unique(actor, work)
        self._batcher.reference.clear()

    # -- reads -----------------------------------------------------------------

    async def balance(self, key: AccountKey) -> Balance:
        checker = FieldChecker()
        checker.require(key.kind in AccountKind, "account.kind", "required")
        checker.identifier(key.owner_id, "account.id")
        check_fiscal_year(checker, key.fiscal_year, "account.fiscal_year")
        checker.raise_if_any()
        missing = NotFound(f"no {key.kind.value} account for {key.fiscal_year}")
        _require_reader(key, missing)
        async with self._sessions() as session:
            account = await QuotaStore(session, "").get_account(key)
        if account is None:
            raise missing
        await self._audited(key)
        return _balance(key, account)

    async def ledger(
        self, key: AccountKey | None, after: int, limit: int
    ) -> Sequence[orm.LedgerEntry]:
        _require_reader(key, InvalidArgument.single("account", "required: an account you may read"))
        query = select(orm.LedgerEntry).where(orm.LedgerEntry.entry_id > after)
        if key is not None:
            query = query.where(
                orm.LedgerEntry.account_kind == key.kind.value,
                orm.LedgerEntry.account_owner == key.owner_id,
                orm.LedgerEntry.fiscal_year == key.fiscal_year,
            )
        query = query.order_by(orm.LedgerEntry.entry_id).limit(limit)
        async with self._sessions() as session:
            entries = (await session.scalars(query)).all()
        await self._audited(key)
        return entries

    async def _audited(self, key: AccountKey | None) -> None:
        """Writes a person's read of an employee's account (or of every
        account) to the audit trail. Agencies' and providers' accounts are
        aggregates; the matcher's reads (entitlement left, while it plans a
        booking its own caller asked for) are not a person looking."""
        if self._audit is None or (key is not None and key.kind is not AccountKind.EMPLOYEE):
            return
        if current_identity().role is Role.SERVICE:
            return
        record = (
            "account/*" if key is None else f"account/employee/{key.owner_id}/{key.fiscal_year}"
        )
        await self._audit.record("read", record)

    async def usage(self, year: int, organisation: str) -> list[UsageRow]:
        """Spent sessions per agency, staff category and month. A cell of
        fewer than MIN_CELL_PEOPLE people is withheld, and so is any cell
        that would let such a cell be worked out by subtraction
        (disclosure.suppress_small_cells)."""
        hold = orm.Hold
        query = (
            select(
                hold.agency_id,
                hold.staff_category,
                hold.session_month,
                func.count(func.distinct(hold.employee_id)),
                func.count(),
                func.sum(hold.minutes),
                func.sum(hold.amount_ntd),
            )
            .where(
                hold.fiscal_year == year,
                hold.state.in_((HoldState.BOOKED.value, HoldState.COMPLETED.value)),
            )
            .group_by(hold.agency_id, hold.staff_category, hold.session_month)
            .order_by(hold.agency_id, hold.staff_category, hold.session_month)
        )
        if organisation:
            query = query.join(orm.Agency, orm.Agency.agency_id == hold.agency_id).where(
                orm.Agency.organisation == organisation
            )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return suppress_small_cells(
            [
                UsageRow(a, c, int(m), int(p), int(n), int(mins or 0), int(amt or 0))
                for a, c, m, p, n, mins, amt in rows
            ]
        )

    async def refresh_metrics(self, year: int) -> None:
        """Sets the balance gauges of every agency and provider for `year`,
        and the count of active holds."""
        account = orm.Account
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        account.kind,
                        account.owner_id,
                        account.entitled,
                        account.held,
                        account.spent,
                    ).where(
                        account.fiscal_year == year,
                        account.kind.in_((AccountKind.AGENCY.value, AccountKind.PROVIDER.value)),
                    )
                )
            ).all()
            active = await session.scalar(
                select(func.count()).where(orm.Hold.state == HoldState.HELD.value)
            )
        for kind, owner, entitled, held, spent in rows:
            if kind == AccountKind.AGENCY.value:
                gauge, scale = metrics.AGENCY_BUDGET, 1  # NT$
            else:
                gauge, scale = metrics.PROVIDER_TIME, 60  # minutes to seconds
            values = {"entitled": entitled, "held": held, "spent": spent}
            values["left"] = entitled - held - spent
            for state, value in values.items():
                gauge.labels(owner, str(year), state).set(value * scale)
        metrics.HOLDS_ACTIVE.set(active or 0)

    async def verify(self) -> list[str]:
        """Every account whose totals differ from its ledger's sums, and
        every negative total; empty when the books balance."""
        entry = orm.LedgerEntry
        sums = select(
            entry.account_kind,
            entry.account_owner,
            entry.fiscal_year,
            func.sum(entry.delta_entitled),
            func.sum(entry.delta_held),
            func.sum(entry.delta_spent),
        ).group_by(entry.account_kind, entry.account_owner, entry.fiscal_year)
        async with self._sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                # Both reads from one snapshot. Under READ COMMITTED each
                # statement sees what committed before it began, so a batch
                # committing between them shows in the accounts but not in
                # the ledger sums, and books that balance seem not to.
                # (SQLite's BEGIN IMMEDIATE already holds off every writer.)
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            ledger = {
                (k, o, y): (int(e), int(h), int(s))
                for k, o, y, e, h, s in (await session.execute(sums)).all()
            }
            accounts = (await session.scalars(select(orm.Account))).all()
        problems = []
        seen = set()
        for account in accounts:
            ident = (account.kind, account.owner_id, account.fiscal_year)
            seen.add(ident)
            label = AccountKey(
                AccountKind(account.kind), account.owner_id, account.fiscal_year
            ).subject
            totals = (account.entitled, account.held, account.spent)
            if ledger.get(ident) != totals:
                problems.append(f"{label}: totals {totals} != ledger {ledger.get(ident)}")
            if min(account.held, account.spent, _totals(account).left) < 0:
                problems.append(f"{label}: negative balance {totals}")
        for ident in ledger.keys() - seen:
            problems.append(f"{ident[0]}/{ident[2]}: ledger entries without an account")
        return problems


_LIMIT_RULES = frozenset(
    {
        RuleCode.WEEKLY_LIMIT,
        RuleCode.EMPLOYEE_ENTITLEMENT,
        RuleCode.PROVIDER_CAP,
        RuleCode.AGENCY_BUDGET,
    }
)


def _totals(account: orm.Account) -> Totals:
    return Totals(account.entitled, account.held, account.spent)
