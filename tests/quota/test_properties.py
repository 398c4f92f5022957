"""Random sequences of quota operations against the ledger on a SQLite file,
checked after every step against a plain model of what the totals must be.

In-process, no gRPC: the machine drives the quota use cases (`QuotaLedger`,
`Funding`, `LedgerReads`) with its own event loop (one per test case),
because Hypothesis runs the steps synchronously.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.quota import orm
from services.quota.domain import AccountKey, AccountKind
from services.quota.funding import Funding, GrantCommand
from services.quota.ledger import QuotaLedger, ReserveCommand
from services.quota.ledger_reads import LedgerReads
from services.rules.office_time import OFFICE_ZONE as TAIPEI
from services.runtime import clock, database
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests import stores

T = TypeVar("T")

YEAR = 2027
ORG = "county"
CATEGORY = "official"
ENTITLEMENT = 180  # minutes a year per employee, by policy
BUDGETS = {"A1": 6_500, "A2": 4_750}  # NT$; deliberately not multiples of a session
CONTRACTS = {"P1": (2_000, 300), "P2": (1_750, 210)}  # NT$ an hour, cap in minutes
EMPLOYEES = ("E1", "E2", "E3", "E4")
DEFAULT_TTL = 900
# No sum of clock steps comes within 40 s below a TTL (70 x 8 = 560 < 600) or
# lands on one, so the model and the ledger, whose clocks differ by the real
# milliseconds between them, never disagree over what is due.
TTLS = (0, 60, 600)
STEPS = (70, 700)
LAPSE = 1_000  # past every TTL


def cost(rate: int, minutes: int) -> int:
    """NT$ for `minutes` at `rate` an hour, rounded up: written out again, not imported."""
    return -(-rate * minutes // 60)


def session_start(week: int) -> datetime:
    return datetime.combine(date.fromisocalendar(YEAR, week, 2), time(10), tzinfo=TAIPEI)


@dataclass
class ModelHold:
    hold_id: str
    command: ReserveCommand
    rate: int
    minutes: int
    amount: int
    state: str
    expires_at: datetime

    def keys(self) -> tuple[AccountKey, AccountKey, AccountKey]:
        c = self.command
        return (
            AccountKey(AccountKind.EMPLOYEE, c.employee_id, YEAR),
            AccountKey(AccountKind.PROVIDER, c.provider_id, YEAR),
            AccountKey(AccountKind.AGENCY, c.agency_id, YEAR),
        )


class Totals:
    def __init__(self, entitled: int) -> None:
        self.entitled, self.held, self.spent = entitled, 0, 0

    @property
    def left(self) -> int:
        return self.entitled - self.held - self.spent

    def as_tuple(self) -> tuple[int, int, int]:
        return self.entitled, self.held, self.spent


class QuotaMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.offset = clock._offset
        self.folder = Path(tempfile.mkdtemp(prefix="quota-props-"))
        url = stores.migrated_sqlite(self.folder / "quota.db")
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = database.create_engine(url)
        self.ledger = QuotaLedger(self.engine, default_hold_ttl_seconds=DEFAULT_TTL)
        self.funding = Funding(self.engine, self.ledger.reference)
        self.reads = LedgerReads(self.engine)
        self.model: dict[AccountKey, Totals] = {}
        self.model_holds: dict[str, ModelHold] = {}
        self.serial = 0
        self.seed()

    def seed(self) -> None:
        async def seed() -> None:
            for agency, budget in BUDGETS.items():
                await self.funding.upsert_agency(agency, ORG, agency, "test")
                await self.funding.top_up(f"budget-{agency}", agency, YEAR, budget, "budget", "t")
            await self.funding.set_policy(ORG, CATEGORY, YEAR, ENTITLEMENT, "test")
            for provider, (rate, cap) in CONTRACTS.items():
                await self.funding.set_contract(provider, YEAR, rate, cap, "contract", "test")

        self.run(seed())
        for agency, budget in BUDGETS.items():
            self.model[AccountKey(AccountKind.AGENCY, agency, YEAR)] = Totals(budget)
        for provider, (_, cap) in CONTRACTS.items():
            self.model[AccountKey(AccountKind.PROVIDER, provider, YEAR)] = Totals(cap)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.engine.dispose())
        finally:
            self.loop.close()
            clock._offset = self.offset
            shutil.rmtree(self.folder, ignore_errors=True)

    def key(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    # -- the model's rules -----------------------------------------------------

    def _expire_in_model(self, hold: ModelHold) -> None:
        for account, amount in zip(
            hold.keys(), (hold.minutes, hold.minutes, hold.amount), strict=True
        ):
            self.model[account].held -= amount
        hold.state = "expired"

    def _refusal(self, command: ReserveCommand, amount: int) -> str | None:
        """The rule that refuses `command`, or None: the ledger's order of checks."""
        employee, provider, agency = (
            AccountKey(AccountKind.EMPLOYEE, command.employee_id, YEAR),
            AccountKey(AccountKind.PROVIDER, command.provider_id, YEAR),
            AccountKey(AccountKind.AGENCY, command.agency_id, YEAR),
        )
        assert command.session_start is not None
        week = command.session_start.isocalendar()[1]
        if any(
            h.state in ("held", "booked", "completed")
            and h.command.employee_id == command.employee_id
            and h.command.session_start is not None
            and h.command.session_start.isocalendar()[1] == week
            for h in self.model_holds.values()
        ):
            return "WEEKLY_LIMIT"
        employee_left = self.model[employee].left if employee in self.model else ENTITLEMENT
        if command.minutes > employee_left:
            return "EMPLOYEE_ENTITLEMENT"
        if command.minutes > self.model[provider].left:
            return "PROVIDER_CAP"
        if amount > self.model[agency].left:
            return "AGENCY_BUDGET"
        return None

    # -- rules -------------------------------------------------------------------

    @initialize(
        target=holds,
        employee=st.sampled_from(EMPLOYEES),
        agency=st.sampled_from(sorted(BUDGETS)),
        provider=st.sampled_from(sorted(CONTRACTS)),
        week=st.integers(1, 3),
        minutes=st.integers(60, 120),
        ttl=st.sampled_from(TTLS),
    )
    def first_reservation(
        self, employee: str, agency: str, provider: str, week: int, minutes: int, ttl: int
    ) -> Any:
        """Every run starts with a hold, so rules that need one are never starved."""
        return self.reserve(employee, agency, provider, week, minutes, ttl)

    @rule(
        target=holds,
        employee=st.sampled_from(EMPLOYEES),
        agency=st.sampled_from(sorted(BUDGETS)),
        provider=st.sampled_from(sorted(CONTRACTS)),
        week=st.integers(1, 3),
        minutes=st.integers(60, 120),
        ttl=st.sampled_from(TTLS),
    )
    def reserve(
        self, employee: str, agency: str, provider: str, week: int, minutes: int, ttl: int
    ) -> Any:
        command = ReserveCommand(
            idempotency_key=self.key("reserve"),
            employee_id=employee,
            agency_id=agency,
            staff_category=CATEGORY,
            provider_id=provider,
            session_start=session_start(week),
            minutes=minutes,
            hold_ttl_seconds=ttl,
        )
        rate = CONTRACTS[provider][0]
        amount = cost(rate, minutes)
        now = clock.now()
        refusal = self._refusal(command, amount)
        due: list[ModelHold] = []
        if refusal is not None:
            # Holds past their TTL that touch one of the three accounts are
            # given back first, and the request is tried again.
            touching = set(ModelHold("", command, 0, 0, 0, "", now).keys())
            due = [
                h
                for h in self.model_holds.values()
                if h.state == "held" and h.expires_at <= now and touching & set(h.keys())
            ]
            for hold in due:
                self._expire_in_model(hold)
            if due:
                refusal = self._refusal(command, amount)
        event(f"reserve: {refusal or 'held'}{', after expiring lapsed holds' if due else ''}")
        if refusal is not None:
            with pytest.raises(FailedPrecondition) as refused:
                self.run(self.ledger.reserve(command, "test"))
            assert refused.value.rule == refusal
            return multiple()
        held = self.run(self.ledger.reserve(command, "test")).hold
        assert (held.state, held.minutes, held.amount_ntd) == ("held", minutes, amount)
        expected_expiry = now + timedelta(seconds=ttl or DEFAULT_TTL)
        assert abs(held.expires_at - expected_expiry) < timedelta(seconds=5)
        employee_key = AccountKey(AccountKind.EMPLOYEE, employee, YEAR)
        self.model.setdefault(employee_key, Totals(ENTITLEMENT))
        model_hold = ModelHold(
            held.hold_id, command, rate, minutes, amount, "held", held.expires_at
        )
        for account, delta in zip(model_hold.keys(), (minutes, minutes, amount), strict=True):
            self.model[account].held += delta
        self.model_holds[held.hold_id] = model_hold
        return held.hold_id

    @rule(hold_id=holds)
    def retry_reserve(self, hold_id: str) -> None:
        """The same request again: the first answer, and nothing changes."""
        command = self.model_holds[hold_id].command
        assert self.run(self.ledger.reserve(command, "test")).hold.hold_id == hold_id

    @rule(
        hold_id=holds,
        minutes=st.one_of(st.just(0), st.integers(1, 130)),
        completed=st.booleans(),
    )
    def commit(self, hold_id: str, minutes: int, completed: bool) -> None:
        hold = self.model_holds[hold_id]
        lapsed = ", lapsed" if hold.state == "held" and hold.expires_at <= clock.now() else ""
        event(f"commit: {hold.state}{lapsed}{', partial' if 0 < minutes < hold.minutes else ''}")
        attempt = self.ledger.commit(hold_id, minutes, completed, "test")
        if not (minutes == 0 or 1 <= minutes <= 120):
            with pytest.raises(InvalidArgument):
                self.run(attempt)
            return
        if hold.state == "held" and hold.expires_at <= clock.now():
            self._expire_in_model(hold)
        if hold.state in ("expired", "released"):
            with pytest.raises(FailedPrecondition) as refused:
                self.run(attempt)
            assert refused.value.rule == f"HOLD_{hold.state.upper()}"
            return
        used = minutes or hold.minutes
        if used > hold.minutes:
            with pytest.raises(InvalidArgument):
                self.run(attempt)
            return
        if hold.state == "completed":
            if used == hold.minutes:
                assert self.run(attempt).state == "completed"
            else:
                with pytest.raises(FailedPrecondition) as refused:
                    self.run(attempt)
                assert refused.value.rule == "SESSION_COMPLETED"
            return
        new_amount = cost(hold.rate, used)
        for account, old, new in zip(
            hold.keys(),
            (hold.minutes, hold.minutes, hold.amount),
            (used, used, new_amount),
            strict=True,
        ):
            if hold.state == "held":
                self.model[account].held -= old
                self.model[account].spent += new
            else:
                self.model[account].spent += new - old
        hold.minutes, hold.amount = used, new_amount
        hold.state = "completed" if completed else "booked"
        result = self.run(attempt)
        assert (result.state, result.minutes, result.amount_ntd) == (
            hold.state,
            hold.minutes,
            hold.amount,
        )

    @rule(hold_id=holds, completed=st.booleans())
    def confirm(self, hold_id: str, completed: bool) -> None:
        """Commit with all the held minutes: the common case, drawn more often."""
        self.commit(hold_id, 0, completed)

    @rule(hold_id=holds, used=st.integers(1, 120), completed=st.booleans())
    def attend(self, hold_id: str, used: int, completed: bool) -> None:
        """A booking confirmed, then the minutes the session actually took."""
        self.commit(hold_id, 0, False)
        self.commit(hold_id, used, completed)

    @rule(target=holds, hold_id=holds)
    def rebook_after_lapse(self, hold_id: str) -> Any:
        """Every TTL passes before a sweeper runs, and the same employee asks
        for the same week again: the lapsed hold must not stand in the way."""
        command = self.model_holds[hold_id].command
        assert command.session_start is not None
        self.expire(LAPSE, sweep=False)
        return self.reserve(
            command.employee_id,
            command.agency_id,
            command.provider_id,
            command.session_start.isocalendar()[1],
            command.minutes,
            command.hold_ttl_seconds,
        )

    @rule(hold_id=holds, completed=st.booleans())
    def confirm_after_lapse(self, hold_id: str, completed: bool) -> None:
        """Every TTL passes before a sweeper runs, then the booking is confirmed:
        a hold that was still held is given back, not spent."""
        self.expire(LAPSE, sweep=False)
        self.commit(hold_id, 0, completed)

    @rule(hold_id=holds, cancelled=st.booleans())
    def release(self, hold_id: str, cancelled: bool) -> None:
        hold = self.model_holds[hold_id]
        event(f"release: {hold.state}")
        attempt = self.ledger.release(hold_id, "plans changed", "test", cancelled)
        if hold.state == "completed":
            with pytest.raises(FailedPrecondition) as refused:
                self.run(attempt)
            assert refused.value.rule == "SESSION_COMPLETED"
            return
        if hold.state == "booked" and not cancelled:
            # A booked hold goes back only with its booking's cancellation.
            with pytest.raises(FailedPrecondition) as refused:
                self.run(attempt)
            assert refused.value.rule == "HOLD_BOOKED"
            return
        if hold.state in ("held", "booked"):
            for account, amount in zip(
                hold.keys(), (hold.minutes, hold.minutes, hold.amount), strict=True
            ):
                if hold.state == "held":
                    self.model[account].held -= amount
                else:
                    self.model[account].spent -= amount
            hold.state = "released"
        assert self.run(attempt).state == hold.state

    @rule(seconds=st.sampled_from(STEPS), sweep=st.booleans())
    def expire(self, seconds: int, sweep: bool) -> None:
        """Moves the clock on and, unless the sweeper is late, gives back what is due.
        Holds left due but unswept meet commit and reserve, which must cope."""
        clock.advance(timedelta(seconds=seconds))
        if not sweep:
            return
        now = clock.now()
        due = [h for h in self.model_holds.values() if h.state == "held" and h.expires_at <= now]
        event(f"expire: {'some' if due else 'none'} due")
        for hold in due:
            self._expire_in_model(hold)
        assert self.run(self.ledger.expire_due()) == len(due)

    @rule(
        owner=st.sampled_from([*EMPLOYEES, *sorted(CONTRACTS)]),
        minutes=st.integers(1, 300),
        retried=st.booleans(),
    )
    def grant(self, owner: str, minutes: int, retried: bool) -> None:
        kind = AccountKind.PROVIDER if owner in CONTRACTS else AccountKind.EMPLOYEE
        account = AccountKey(kind, owner, YEAR)
        command = GrantCommand(
            idempotency_key=self.key("grant"),
            account=account,
            minutes=minutes,
            approval_reference="approval-1",
            approver="director",
            reason="special approval",
        )
        if account not in self.model:
            # An employee's account opens with the first reservation.
            with pytest.raises(NotFound):
                self.run(self.funding.grant(command, "test"))
            return
        grant_id, balance = self.run(self.funding.grant(command, "test"))
        self.model[account].entitled += minutes
        assert balance.totals.entitled == self.model[account].entitled
        if retried:
            assert self.run(self.funding.grant(command, "test"))[0] == grant_id

    @rule(agency=st.sampled_from(sorted(BUDGETS)), amount=st.integers(1, 5_000))
    def top_up(self, agency: str, amount: int) -> None:
        self.run(self.funding.top_up(self.key("topup"), agency, YEAR, amount, "top-up", "test"))
        self.model[AccountKey(AccountKind.AGENCY, agency, YEAR)].entitled += amount

    # -- checks after every step ---------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        async def read() -> tuple[list[orm.Account], list[orm.Hold], list[str]]:
            sessions = async_sessionmaker(self.engine)
            async with sessions() as session:
                accounts = (await session.scalars(select(orm.Account))).all()
                holds = (await session.scalars(select(orm.Hold))).all()
            return list(accounts), list(holds), await self.reads.verify()

        accounts, holds, problems = self.run(read())
        assert problems == []
        actual = {
            AccountKey(AccountKind(a.kind), a.owner_id, a.fiscal_year): (
                a.entitled,
                a.held,
                a.spent,
            )
            for a in accounts
        }
        assert actual == {key: totals.as_tuple() for key, totals in self.model.items()}
        for key, totals in self.model.items():
            balance = self.run(self.reads.balance(key)).totals
            assert (balance.entitled, balance.held, balance.spent) == totals.as_tuple()
        for entitled, held, spent in actual.values():
            assert min(held, spent, entitled - held - spent) >= 0, (entitled, held, spent)
        assert {h.hold_id: (h.state, h.minutes, h.amount_ntd) for h in holds} == {
            h.hold_id: (h.state, h.minutes, h.amount) for h in self.model_holds.values()
        }


QuotaMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQuotaLedgerProperties = QuotaMachine.TestCase
