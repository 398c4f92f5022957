"""What the books say: balances, ledger pages, usage aggregates with small
cells withheld, the balance gauges, and the check that every balance is
its ledger's sum."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.quota import disclosure, metrics, orm
from services.quota.disclosure import Charge, UsageRow
from services.quota.domain import (
    CHARGING_STATES,
    AccountKey,
    AccountKind,
    Balance,
    HoldState,
    Totals,
    check_fiscal_year,
)
from services.quota.holds.requests import HoldView
from services.quota.store import QuotaStore, balance_of, totals_of
from services.rules import attendance
from services.rules.office_time import local_day
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.auth import Role, current_identity
from services.runtime.errors import (
    InvalidArgument,
    NotFound,
    ServiceError,
)
from services.runtime.fields import FieldChecker
from services.runtime.tenancy import DEFAULT_TENANT


def _require_reader(key: AccountKey | None, refusal: ServiceError) -> None:
    """The caller's scope on an account (policy.py): an employee reads only
    their own, HR no employee's; `None` is every account, individuals' too."""
    if key is None:
        policy.require_own(refusal, employee_id="*")  # "*" is nobody's id
    elif key.kind is AccountKind.EMPLOYEE:
        policy.require_own(refusal, employee_id=key.owner_id)
    else:
        policy.require_own(refusal)


def _charged(
    minutes: int, amount_ntd: int, outcome: str, charge: str, state: str
) -> tuple[int, int]:
    """What a hold put on its provider (minutes) and agency (NT$): all of a
    session that took place or will; of a missed one, what its charge
    says; of one charged nothing (given back), nothing."""
    if state == HoldState.RELEASED.value:
        return 0, 0
    paid = not outcome or attendance.Charge(charge or attendance.Charge.FULL).pays_provider
    return (minutes, amount_ntd) if paid else (0, 0)


def _label_sets(gauge: Gauge, owner_label: str) -> set[tuple[str, ...]]:
    """The label values, in the gauge's label order, of every series it has."""
    names = ("tenant", owner_label, "fiscal_year", "state")
    return {
        tuple(sample.labels[name] for name in names)
        for family in gauge.collect()
        for sample in family.samples
    }


class LedgerReads:
    def __init__(
        self, engine: AsyncEngine, audit: AuditTrail | None = None, tenant: str = DEFAULT_TENANT
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._audit = audit
        self._tenant = tenant  # its gauges' label

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
        return await self.as_shown(balance_of(key, account))

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

    async def charges(self, after: str, limit: int) -> list[HoldView]:
        """BOOKED and COMPLETED holds with ids after `after`, by id: the
        charges the matcher's check compares its sessions with."""
        hold = orm.Hold.__table__
        query = (
            select(hold)
            .where(hold.c.state.in_(CHARGING_STATES), hold.c.hold_id > after)
            .order_by(hold.c.hold_id)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        return [HoldView.of(dict(row)) for row in rows]

    async def usage(self, year: int, organisation: str) -> tuple[list[UsageRow], int]:
        """Spent sessions per agency, staff category and month, as the
        disclosure rules release them (disclosure.py), and the last month
        they cover: for HR, the closed months only."""
        through = self._through_month(year)
        released = disclosure.release(await self._charges(year, through))
        if organisation:
            async with self._sessions() as session:
                mine = set(
                    await session.scalars(
                        select(orm.Agency.agency_id).where(orm.Agency.organisation == organisation)
                    )
                )
            return [r for r in released.cells if r.agency_id in mine], through
        return released.cells, through

    async def agencies(self, organisation: str) -> list[orm.Agency]:
        """The registered agencies (of `organisation`, if given), by id."""
        query = select(orm.Agency).order_by(orm.Agency.agency_id)
        if organisation:
            query = query.where(orm.Agency.organisation == organisation)
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def _charges(self, year: int, through_month: int) -> list[Charge]:
        """The year's charged sessions up to `through_month`, and its missed
        or late-cancelled ones with what they were charged (perhaps
        nothing), for the disclosure rules only: they carry pseudonymous
        ids, which never leave disclosure.py."""
        hold = orm.Hold
        query = select(
            hold.agency_id,
            hold.staff_category,
            hold.session_month,
            hold.provider_id,
            hold.employee_id,
            hold.minutes,
            hold.amount_ntd,
            hold.outcome,
            hold.charge,
            hold.state,
        ).where(
            hold.fiscal_year == year,
            hold.state.in_(CHARGING_STATES)
            | ((hold.state == HoldState.RELEASED.value) & (hold.outcome != "")),
            hold.session_month <= through_month,
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Charge(a, c, int(m), p, e, *_charged(int(n), int(t), outcome, charge, state), outcome)
            for a, c, m, p, e, n, t, outcome, charge, state in rows
        ]

    @staticmethod
    def _through_month(year: int) -> int:
        """The last month HR may see of `year`: closed ones only (their
        figures no longer move). Everyone else reads every month."""
        if current_identity().role is not Role.HR:
            return 12
        today = local_day(clock.now())
        return disclosure.closed_through(today.year, today.month, today.day, year)

    async def as_shown(self, balance: Balance) -> Balance:
        """`balance` as the caller may read it. For HR, an agency's or
        provider's is spent as of the last closed month, held not shown,
        banded unless the disclosure rules let the exact figure out;
        everyone else reads it live."""
        key = balance.key
        if current_identity().role is not Role.HR or key.kind is AccountKind.EMPLOYEE:
            return balance
        through = self._through_month(key.fiscal_year)
        charges = await self._charges(key.fiscal_year, through)
        released = disclosure.release(charges)
        if key.kind is AccountKind.AGENCY:
            spent = sum(c.amount_ntd for c in charges if c.agency_id == key.owner_id)
            exact, narrowest = key.owner_id in released.exact_agencies, disclosure.BAND_NTD
        else:
            spent = sum(c.minutes for c in charges if c.provider_id == key.owner_id)
            exact, narrowest = key.owner_id in released.exact_providers, disclosure.BAND_MINUTES
        entitled = balance.totals.entitled
        band = 0
        if not exact:
            spent, band = disclosure.banded(spent, entitled, narrowest)
        return Balance(key, Totals(entitled, 0, spent), band=band, through_month=through)

    async def refresh_metrics(self, year: int) -> None:
        """Sets the balance gauges for `year` of every agency and provider
        that enough people stand behind (disclosure.shown_owners), removes
        those of every other, and sets the count of active holds; each
        series labelled with the tenant."""
        tenant = self._tenant
        account = orm.Account
        hold = orm.Hold
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
            # Who stands behind each agency's and provider's charges: the
            # pseudonymous ids stay in this function, only counted.
            behind = (
                await session.execute(
                    select(hold.agency_id, hold.provider_id, hold.employee_id)
                    .where(hold.fiscal_year == year, hold.state.in_(CHARGING_STATES))
                    .distinct()
                )
            ).all()
            active = await session.scalar(
                select(func.count()).where(orm.Hold.state == HoldState.HELD.value)
            )
        people: dict[str, dict[str, set[str]]] = {
            AccountKind.AGENCY.value: {},
            AccountKind.PROVIDER.value: {},
        }
        for kind, owner, *_ in rows:
            people[kind][owner] = set()
        for agency, provider, employee in behind:
            people[AccountKind.AGENCY.value].setdefault(agency, set()).add(employee)
            people[AccountKind.PROVIDER.value].setdefault(provider, set()).add(employee)
        shown = {kind: disclosure.shown_owners(who) for kind, who in people.items()}
        exported: set[tuple[Gauge, tuple[str, ...]]] = set()
        for kind, owner, entitled, held, spent in rows:
            if owner not in shown[kind]:
                continue
            if kind == AccountKind.AGENCY.value:
                gauge, scale = metrics.AGENCY_BUDGET, 1  # NT$
            else:
                gauge, scale = metrics.PROVIDER_TIME, 60  # minutes to seconds
            values = {"entitled": entitled, "held": held, "spent": spent}
            values["left"] = entitled - held - spent
            for state, value in values.items():
                gauge.labels(tenant, owner, str(year), state).set(value * scale)
                exported.add((gauge, (tenant, owner, str(year), state)))
        # Whatever was exported for `year` before and is not now (its owner
        # fell under the threshold) goes: a stale series would go on
        # showing a small group's money. Read from the gauges themselves,
        # not remembered here, since they belong to the process.
        for gauge, owner_label in (
            (metrics.AGENCY_BUDGET, "agency"),
            (metrics.PROVIDER_TIME, "provider"),
        ):
            for labels in _label_sets(gauge, owner_label):
                if labels[:3:2] == (tenant, str(year)) and (gauge, labels) not in exported:
                    gauge.remove(*labels)
        metrics.HOLDS_ACTIVE.labels(tenant).set(active or 0)

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
            if min(account.held, account.spent, totals_of(account).left) < 0:
                problems.append(f"{label}: negative balance {totals}")
        for ident in ledger.keys() - seen:
            problems.append(f"{ident[0]}/{ident[2]}: ledger entries without an account")
        return problems
