"""Money and time into the books: special-approval grants, budget top-ups
and transfers, provider contracts (rate and hour cap), agencies and
entitlement policies. Each one transaction, each change a ledger entry,
each retry-safe."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.quota import orm
from services.quota.domain import (
    AccountKey,
    AccountKind,
    Balance,
    check_fiscal_year,
    require_room,
)
from services.quota.reference import ReferenceData
from services.quota.store import QuotaStore, balance_of, request_fingerprint, totals_of
from services.rules.codes import RuleCode
from services.runtime import clock
from services.runtime.database import is_retryable
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
)
from services.runtime.fields import FieldChecker

log = logging.getLogger("eap.quota")
T = TypeVar("T")


@dataclass(frozen=True)
class GrantCommand:
    idempotency_key: str
    account: AccountKey
    minutes: int
    approval_reference: str
    approver: str
    reason: str


class Funding:
    def __init__(self, engine: AsyncEngine, reference: ReferenceData) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._reference = reference  # the hold queue's cache of what changes here

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
        fingerprint = request_fingerprint(command)
        key = command.account

        async def work(store: QuotaStore) -> tuple[str, Balance]:
            previous = await store.idempotency("grant", command.idempotency_key)
            if previous is not None:
                if previous.fingerprint != fingerprint:
                    raise AlreadyExists("idempotency_key was used for a different grant")
                account = await store.get_account(key)
                assert account is not None
                return previous.result_id, balance_of(key, account)
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
            return grant_id, balance_of(key, account)

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
        fingerprint = request_fingerprint((agency_id, year, amount, reason))
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
                return balance_of(key, account)
            reference = uuid.uuid4().hex
            if account is None:
                account = store.open_account(
                    key, amount, reason, reference, ledger_kind="BUDGET_TOPUP"
                )
            else:
                store.change(key, account, "BUDGET_TOPUP", reference, reason, entitled=amount)
            store.remember("topup", idempotency_key, fingerprint, reference)
            return balance_of(key, account)

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
        fingerprint = request_fingerprint((from_agency, to_agency, year, amount, reason))
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
                return balance_of(giver, accounts[giver]), balance_of(taker, accounts[taker])
            if giver not in accounts:
                raise FailedPrecondition(
                    RuleCode.NO_BUDGET_POOL, giver.subject, f"agency has no budget pool for {year}"
                )
            require_room(giver, totals_of(accounts[giver]), amount)
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
            return balance_of(giver, accounts[giver]), balance_of(taker, accounts[taker])

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
        self._reference.clear()

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
            return balance_of(key, account)

        result = await self._retrying_unique(actor, work)
        self._reference.clear()
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
        return contract.hourly_rate_ntd, balance_of(key, account)

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
        self._reference.clear()
