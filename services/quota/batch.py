"""The hot path, applied in batches: reservations, commits and releases.

Every booking touches its agency's pool and its provider's cap, so under load
every transaction queues for the same few rows. Here the requests that arrive
while one transaction runs wait together and go in the next one: the rows are
locked once and committed once for the whole batch (group commit). Within a
batch each request is checked and applied on its own, in arrival order, as if
the requests ran one after another; a refused request changes nothing.

Locks are taken in one global order: hold rows by id, then account rows by
(kind, owner, year). Every other writer (the sweeper, grants, top-ups) takes
them in the same order, so transactions queue instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.quota import metrics, orm
from services.quota.domain import (
    AccountKey,
    AccountKind,
    Balance,
    HoldState,
    Share,
    Totals,
    require_room,
)
from services.quota.reference import ReferenceData
from services.rules.codes import RuleCode
from services.rules.cost import session_cost_ntd
from services.rules.office_time import fiscal_year_of, iso_week, local
from services.runtime import clock
from services.runtime import deadline as call_deadline
from services.runtime.database import is_retryable, padded
from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)

log = logging.getLogger("eap.quota")

MAX_BATCH = 256
ATTEMPTS = 5
DRAIN_STOP_SECONDS = 5.0

ACCOUNTS = cast(Table, orm.Account.__table__)
HOLDS = cast(Table, orm.Hold.__table__)
LEDGER = cast(Table, orm.LedgerEntry.__table__)


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as it stands after a request; what the API shows of it."""

    hold_id: str
    state: str
    employee_id: str
    agency_id: str
    provider_id: str
    fiscal_year: int
    iso_week: str
    minutes: int
    amount_ntd: int
    expires_at: datetime
    booking_ref: str
    share: Share

    @property
    def provider_minutes(self) -> int:
        return self.share.of(self.minutes)

    @classmethod
    def of(cls, hold: dict[str, Any]) -> HoldView:
        return cls(
            hold["hold_id"],
            hold["state"],
            hold["employee_id"],
            hold["agency_id"],
            hold["provider_id"],
            hold["fiscal_year"],
            hold["iso_week"],
            hold["minutes"],
            hold["amount_ntd"],
            hold["expires_at"],
            hold["booking_ref"],
            share_of(hold),
        )


@dataclass(frozen=True)
class Reservation:
    hold: HoldView
    employee: Balance
    provider: Balance
    agency: Balance


@dataclass(eq=False)
class _Op:
    actor: str
    future: asyncio.Future[Any]


@dataclass(eq=False)
class ReserveOp(_Op):
    idempotency_key: str
    fingerprint: str
    employee_id: str
    agency_id: str
    staff_category: str
    provider_id: str
    session_start: datetime
    minutes: int
    ttl_seconds: int
    booking_ref: str
    share: Share

    @property
    def year(self) -> int:
        return fiscal_year_of(self.session_start)

    def account_keys(self) -> tuple[AccountKey, AccountKey, AccountKey]:
        return self.keys_of(self.employee_id, self.provider_id, self.agency_id, self.session_start)

    @staticmethod
    def keys_of(
        employee_id: str, provider_id: str, agency_id: str, session_start: datetime
    ) -> tuple[AccountKey, AccountKey, AccountKey]:
        """The accounts a reservation charges: employee, provider, agency."""
        year = fiscal_year_of(session_start)
        return (
            AccountKey(AccountKind.EMPLOYEE, employee_id, year),
            AccountKey(AccountKind.PROVIDER, provider_id, year),
            AccountKey(AccountKind.AGENCY, agency_id, year),
        )


@dataclass(eq=False)
class CommitOp(_Op):
    hold_id: str
    minutes: int
    completed: bool


@dataclass(eq=False)
class ReleaseOp(_Op):
    hold_id: str
    reason: str
    booking_cancelled: bool = False


@dataclass(eq=False)
class MoveOp(_Op):
    """A booked hold moved to another session of its employee (a reschedule)."""

    hold_id: str
    employee_id: str
    provider_id: str
    session_start: datetime
    minutes: int
    booking_ref: str

    @property
    def year(self) -> int:
        return fiscal_year_of(self.session_start)

    @property
    def week(self) -> str:
        return iso_week(self.session_start).label


@dataclass
class _Account:
    """An account's totals inside one batch; written back if `dirty`."""

    key: AccountKey
    entitled: int
    held: int
    spent: int
    staff_category: str | None
    new: bool = False
    dirty: bool = False

    @property
    def totals(self) -> Totals:
        return Totals(self.entitled, self.held, self.spent)

    def view(self) -> Balance:
        return Balance(self.key, self.totals)


def hold_keys(hold: dict[str, Any]) -> tuple[AccountKey, AccountKey, AccountKey]:
    year = hold["fiscal_year"]
    return (
        AccountKey(AccountKind.EMPLOYEE, hold["employee_id"], year),
        AccountKey(AccountKind.PROVIDER, hold["provider_id"], year),
        AccountKey(AccountKind.AGENCY, hold["agency_id"], year),
    )


def share_of(hold: dict[str, Any]) -> Share:
    return Share(hold["group_size"], hold["group_index"])


def _charges(hold: dict[str, Any], minutes: int) -> tuple[int, int, int]:
    """What `minutes` of the hold's session cost its employee, provider and
    agency accounts."""
    share = share_of(hold)
    return minutes, share.of(minutes), share.of(session_cost_ntd(hold["hourly_rate_ntd"], minutes))


def _pk(key: AccountKey) -> tuple[str, str, int]:
    return (key.kind.value, key.owner_id, key.fiscal_year)


@dataclass
class _Batch:
    """What one transaction read, and what it will write."""

    now: datetime
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty_holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_holds: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[AccountKey, _Account] = field(default_factory=dict)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)  # holds by idempotency key
    organisations: dict[str, str] = field(default_factory=dict)
    rates: dict[tuple[str, int], int] = field(default_factory=dict)
    policies: dict[tuple[str, str, int], int] = field(default_factory=dict)
    taken_weeks: set[tuple[str, str]] = field(default_factory=set)
    entries: list[dict[str, Any]] = field(default_factory=list)
    moved_holds: dict[str, dict[str, Any]] = field(default_factory=dict)  # rare: own UPDATE

    def change(
        self,
        account: _Account,
        kind: str,
        reference: str,
        actor: str,
        reason: str = "",
        *,
        entitled: int = 0,
        held: int = 0,
        spent: int = 0,
    ) -> None:
        account.entitled += entitled
        account.held += held
        account.spent += spent
        account.dirty = True
        self.entries.append(
            {
                "recorded_at": self.now,
                "account_kind": account.key.kind.value,
                "account_owner": account.key.owner_id,
                "fiscal_year": account.key.fiscal_year,
                "kind": kind,
                "delta_entitled": entitled,
                "delta_held": held,
                "delta_spent": spent,
                "actor": actor,
                "reason": reason,
                "reference": reference,
            }
        )

    def touch(self, hold: dict[str, Any]) -> None:
        self.dirty_holds[hold["hold_id"]] = hold


class HoldBatcher:
    """Applies requests in batches, one transaction at a time, and admits
    only the requests it can apply before their callers give up.

    Overloaded, a plain queue serves nobody: every request waits behind the
    ones before it until its caller's deadline passes, so the transaction
    applies requests whose callers have just left (measured: 39 of 1,692
    pairs a second completed at twice the target rate). So the queue is kept
    short enough to be served in time. A Reserve that would wait longer than
    its caller's deadline (or `max_queue_seconds`) at the rate the batches
    are being applied is refused at once, RESOURCE_EXHAUSTED with a retry
    hint; Commits and Releases finish work already begun and free room, so
    they are never refused and go ahead of the Reserves."""

    def __init__(
        self, engine: AsyncEngine, default_ttl_seconds: int, max_queue_seconds: float = 1.0
    ) -> None:
        self._engine = engine
        self._default_ttl = default_ttl_seconds
        self._max_queue_seconds = max_queue_seconds
        self.reference = ReferenceData()
        self._finishing: list[_Op] = []  # Commits and Releases
        self._pending: list[_Op] = []  # Reserves
        self._drain: asyncio.Task[None] | None = None
        self._in_batch = 0
        self._ops_per_second: float | None = None  # none measured yet

    async def submit(self, op: _Op) -> Any:
        """Queues `op` and waits for its result. The first caller to find no
        drain running starts one, which takes batches off the queue, one
        transaction at a time, until it is empty; a caller that gives up
        (deadline) does not stop it, and its request is dropped unless its
        batch has begun. (Two drains in parallel measured slower once a batch
        wrote in one statement: they halve the batches and queue on the same
        rows.)"""
        if isinstance(op, ReserveOp):
            self._admit()
            self._pending.append(op)
        else:
            self._finishing.append(op)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self._drain_queue())
        return await op.future

    async def close(self) -> None:
        """Lets the transaction under way finish (a few seconds at most),
        before the engine under it is disposed of; then stops the drain.
        Requests still queued have no caller left: the server has stopped."""
        drain = self._drain
        if drain is None or drain.done():
            return
        await asyncio.wait([drain], timeout=DRAIN_STOP_SECONDS)
        if not drain.done():
            drain.cancel()
            await asyncio.wait([drain], timeout=DRAIN_STOP_SECONDS)
        if not drain.done():
            log.error("the quota queue did not stop")

    def _admit(self) -> None:
        """Refuses a Reserve that the queue ahead of it would keep waiting
        past its caller's deadline, or past `max_queue_seconds`."""
        ahead = self._in_batch + len(self._finishing) + len(self._pending)
        if not ahead or self._ops_per_second is None:
            return  # waiting cannot make it any better
        wait = ahead / self._ops_per_second
        budget = self._max_queue_seconds
        remaining = call_deadline.remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        if wait > budget:
            metrics.RESERVES_SHED.inc()
            raise ResourceExhausted(
                f"the quota service is busy: the requests queued ahead would take "
                f"{wait * 1000:.0f} ms, over this call's {budget * 1000:.0f} ms; retry",
                wait,
            )

    async def expire_due(self, limit: int, touching: Sequence[AccountKey] = ()) -> int:
        """Gives back up to `limit` holds past their TTL (only those charging
        `touching`, if given); returns how many. Replicas skip each other's
        picks (SKIP LOCKED), so every replica can sweep."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._engine.begin() as connection:
                    work = _Batch(now=clock.now())
                    due = await _due_holds(connection, work.now, limit, touching)
                    work.holds = {hold["hold_id"]: hold for hold in due}
                    keys = {key for hold in due for key in hold_keys(hold)}
                    work.accounts = await _lock_accounts(connection, keys) if keys else {}
                    for hold in due:
                        give_back(work, hold, "EXPIRE", "system", "ttl passed")
                    await _write(connection, work)
                if due:
                    log.info("holds expired", extra={"count": len(due)})
                return len(due)
            except DBAPIError as error:
                if attempt == ATTEMPTS or not is_retryable(error):
                    raise
        raise AssertionError("unreachable")

    def new_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _drain_queue(self) -> None:
        loop = asyncio.get_running_loop()
        while self._finishing or self._pending:
            # A request whose caller has gone (deadline passed, call cancelled)
            # is dropped, not applied: the caller heard an error and retries
            # with the same key if it still wants the hold. Applied, it would
            # hold or book for nobody, as late as an overloaded queue reached
            # it, and spend the time of requests whose callers still wait.
            queued = [op for op in (*self._finishing, *self._pending) if not op.future.done()]
            batch = queued[:MAX_BATCH]
            self._finishing = [op for op in queued[MAX_BATCH:] if not isinstance(op, ReserveOp)]
            self._pending = [op for op in queued[MAX_BATCH:] if isinstance(op, ReserveOp)]
            if not batch:
                continue
            self._in_batch = len(batch)
            started = loop.time()
            try:
                await self._run(batch)
            finally:
                self._in_batch = 0
            self._measure(len(batch), loop.time() - started)

    def _measure(self, applied: int, seconds: float) -> None:
        """The rate batches are applied at, smoothed over the last few: what
        `_admit` divides the queue by. A lone request's transaction is the
        slowest per request, so an idle service underestimates its rate and
        admits a little less than it could for one batch or two."""
        rate = applied / max(seconds, 1e-6)
        previous = self._ops_per_second
        self._ops_per_second = rate if previous is None else 0.7 * previous + 0.3 * rate

    async def _run(self, batch: list[_Op], attempt: int = 1) -> None:
        try:
            outcomes = await self._transaction(batch)
        except IntegrityError:
            # A replica committed the same idempotency key, employee-week or
            # new account between our reads and our writes. Alone, each
            # request re-reads and sees what the other replica did.
            if len(batch) > 1:
                for op in batch:
                    await self._run([op])
                return
            if attempt < ATTEMPTS:
                await self._run(batch, attempt + 1)
                return
            outcomes = [Aborted("a concurrent change kept winning; retry the request")]
        except DBAPIError as error:
            if attempt < ATTEMPTS and is_retryable(error):
                log.warning("batch retried", extra={"attempt": attempt, "size": len(batch)})
                await self._run(batch, attempt + 1)
                return
            outcomes = [error] * len(batch)
        except Exception as error:  # the whole batch failed: each caller hears why
            outcomes = [error] * len(batch)
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():
                continue  # the caller gave up waiting
            if isinstance(outcome, BaseException):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(outcome)

    async def _transaction(self, batch: Sequence[_Op]) -> list[object]:
        async with self._engine.begin() as connection:
            work = _Batch(now=clock.now())
            await _read(connection, work, batch, self.reference)
            outcomes: list[object] = []
            for op in batch:
                try:
                    outcomes.append(self._apply(work, op))
                except ServiceError as refusal:
                    outcomes.append(refusal)
            await _write(connection, work)
        return outcomes

    def _apply(self, work: _Batch, op: _Op) -> object:
        if isinstance(op, ReserveOp):
            return self._reserve(work, op)
        if isinstance(op, CommitOp):
            return _commit(work, op)
        if isinstance(op, MoveOp):
            return _move(work, op)
        assert isinstance(op, ReleaseOp)
        return _release(work, op)

    def _reserve(self, work: _Batch, op: ReserveOp) -> Reservation:
        employee_key, provider_key, agency_key = op.account_keys()
        previous = work.by_key.get(op.idempotency_key)
        if previous is not None:
            if previous["fingerprint"] != op.fingerprint:
                raise AlreadyExists("idempotency_key was used for a different reservation")
            charged = (work.accounts[key].view() for key in hold_keys(previous))
            return Reservation(HoldView.of(previous), *charged)

        year = op.year
        organisation = work.organisations.get(op.agency_id)
        if organisation is None:
            raise NotFound("agency_id names no agency")
        rate = work.rates.get((op.provider_id, year))
        if rate is None:
            raise FailedPrecondition(
                RuleCode.NO_CONTRACT, provider_key.subject, f"provider has no contract for {year}"
            )
        agency = work.accounts.get(agency_key)
        if agency is None:
            raise FailedPrecondition(
                RuleCode.NO_BUDGET_POOL, agency_key.subject, f"agency has no budget pool for {year}"
            )
        provider = work.accounts.get(provider_key)
        if provider is None:
            raise FailedPrecondition(
                RuleCode.NO_CONTRACT, provider_key.subject, f"provider has no hour cap for {year}"
            )
        employee = work.accounts.get(employee_key)
        opening: int | None = None
        if employee is None:
            opening = work.policies.get((organisation, op.staff_category, year))
            if opening is None:
                raise FailedPrecondition(
                    RuleCode.NO_ENTITLEMENT_POLICY,
                    f"policy/{organisation}/{op.staff_category}/{year}",
                    "no entitlement policy for this organisation, staff category and year",
                )
        elif employee.staff_category != op.staff_category:
            raise FailedPrecondition(
                RuleCode.STAFF_CATEGORY_MISMATCH,
                employee_key.subject,
                "staff_category differs from the one the employee's account was opened with",
            )
        week = iso_week(op.session_start).label
        if (op.employee_id, week) in work.taken_weeks:
            raise FailedPrecondition(
                RuleCode.WEEKLY_LIMIT,
                employee_key.subject,
                f"WEEKLY_LIMIT: one session per person per week; {week} is taken",
                left={"iso_week": week},
            )
        provider_minutes = op.share.of(op.minutes)
        amount = op.share.of(session_cost_ntd(rate, op.minutes))
        employee_totals = employee.totals if employee else Totals(opening or 0, 0, 0)
        require_room(employee_key, employee_totals, op.minutes)
        require_room(provider_key, provider.totals, provider_minutes)
        require_room(agency_key, agency.totals, amount)

        # Every check passed: from here on the request changes things.
        hold_id = uuid.uuid4().hex
        if employee is None:
            employee = _Account(employee_key, 0, 0, 0, op.staff_category, new=True)
            work.accounts[employee_key] = employee
            work.change(
                employee,
                "ENTITLEMENT_OPEN",
                "policy",
                op.actor,
                "entitlement by policy",
                entitled=opening or 0,
            )
        charges = ((employee, op.minutes), (provider, provider_minutes), (agency, amount))
        for account, held in charges:
            work.change(account, "HOLD", hold_id, op.actor, held=held)
        hold = {
            "hold_id": hold_id,
            "employee_id": op.employee_id,
            "agency_id": op.agency_id,
            "provider_id": op.provider_id,
            "staff_category": op.staff_category,
            "fiscal_year": year,
            "session_month": local(op.session_start).month,
            "iso_week": week,
            "session_start": op.session_start,
            "hourly_rate_ntd": rate,
            "minutes": op.minutes,
            "amount_ntd": amount,
            "group_size": op.share.size,
            "group_index": op.share.index,
            "state": HoldState.HELD.value,
            "expires_at": work.now + timedelta(seconds=op.ttl_seconds or self._default_ttl),
            "booking_ref": op.booking_ref,
            "created_at": work.now,
            "idempotency_key": op.idempotency_key,
            "fingerprint": op.fingerprint,
        }
        work.holds[hold_id] = hold
        work.new_holds.append(hold)
        work.taken_weeks.add((op.employee_id, week))
        work.by_key[op.idempotency_key] = hold
        return Reservation(HoldView.of(hold), employee.view(), provider.view(), agency.view())


def _locked_hold(work: _Batch, hold_id: str) -> dict[str, Any]:
    hold = work.holds.get(hold_id)
    if hold is None:
        raise NotFound("hold_id names no hold")
    return hold


def give_back(work: _Batch, hold: dict[str, Any], kind: str, actor: str, reason: str) -> None:
    """Returns everything an active hold took, as `kind` (RELEASE or EXPIRE)."""
    state = HoldState(hold["state"])
    column = "held" if state is HoldState.HELD else "spent"
    for key, amount in zip(hold_keys(hold), _charges(hold, hold["minutes"]), strict=True):
        work.change(work.accounts[key], kind, hold["hold_id"], actor, reason, **{column: -amount})
    hold["state"] = (HoldState.EXPIRED if kind == "EXPIRE" else HoldState.RELEASED).value
    work.taken_weeks.discard((hold["employee_id"], hold["iso_week"]))
    work.touch(hold)


def _commit(work: _Batch, op: CommitOp) -> HoldView:
    hold = _locked_hold(work, op.hold_id)
    state = HoldState(hold["state"])
    if state is HoldState.HELD and hold["expires_at"] <= work.now:
        give_back(work, hold, "EXPIRE", "system", "ttl passed")
        state = HoldState.EXPIRED
    if state in (HoldState.EXPIRED, HoldState.RELEASED):
        rule = RuleCode.HOLD_EXPIRED if state is HoldState.EXPIRED else RuleCode.HOLD_RELEASED
        raise FailedPrecondition(rule, "hold", f"{rule.value}: the hold was given back")
    used = op.minutes or hold["minutes"]
    if used > hold["minutes"]:
        raise InvalidArgument.single("minutes", f"at most the {hold['minutes']} minutes held")
    if state is HoldState.COMPLETED:
        if used == hold["minutes"]:
            return HoldView.of(hold)  # a retried completion
        raise FailedPrecondition(
            RuleCode.SESSION_COMPLETED, "hold", "the session is already completed"
        )
    if state is HoldState.BOOKED and used == hold["minutes"] and not op.completed:
        return HoldView.of(hold)  # a retried confirmation changes nothing
    kind = "COMPLETE" if op.completed else "COMMIT"
    changes = zip(_charges(hold, hold["minutes"]), _charges(hold, used), strict=True)
    for key, (old, new) in zip(hold_keys(hold), changes, strict=True):
        account = work.accounts[key]
        if state is HoldState.HELD:
            work.change(account, kind, hold["hold_id"], op.actor, held=-old, spent=new)
        elif old != new:
            work.change(account, kind, hold["hold_id"], op.actor, spent=new - old)
    hold["minutes"], hold["amount_ntd"] = used, _charges(hold, used)[2]
    hold["state"] = (HoldState.COMPLETED if op.completed else HoldState.BOOKED).value
    work.touch(hold)
    return HoldView.of(hold)


def _release(work: _Batch, op: ReleaseOp) -> HoldView:
    hold = _locked_hold(work, op.hold_id)
    state = HoldState(hold["state"])
    if state is HoldState.COMPLETED:
        raise FailedPrecondition(
            RuleCode.SESSION_COMPLETED, "hold", "a completed session cannot be released"
        )
    if state is HoldState.BOOKED and not op.booking_cancelled:
        raise FailedPrecondition(
            RuleCode.HOLD_BOOKED,
            "hold",
            "HOLD_BOOKED: the hold pays for a confirmed booking; only cancelling it gives it back",
        )
    if state in (HoldState.HELD, HoldState.BOOKED):
        give_back(work, hold, "RELEASE", op.actor, op.reason)
    return HoldView.of(hold)


def _move(work: _Batch, op: MoveOp) -> HoldView:
    """Moves a booked hold to a new session in place: the same hold, the old
    session's charges given back and the new one's spent, in one step. The
    checks see the old session as given back, and nothing changes unless
    all of them pass."""
    hold = _locked_hold(work, op.hold_id)
    if hold["employee_id"] != op.employee_id:
        raise InvalidArgument.single("employee_id", "the employee whose hold it is")
    state = HoldState(hold["state"])
    week = op.week
    if (
        state is HoldState.BOOKED
        and hold["booking_ref"] == op.booking_ref
        and hold["session_start"] == op.session_start
        and hold["provider_id"] == op.provider_id
    ):
        return HoldView.of(hold)  # a retried move
    if state is not HoldState.BOOKED:
        raise FailedPrecondition(
            RuleCode.NOT_BOOKED, "hold", "NOT_BOOKED: only a confirmed booking's hold can move"
        )
    if share_of(hold).size != 1:
        raise FailedPrecondition(
            RuleCode.NOT_BOOKED, "hold", "a group session's place does not move on its own"
        )
    employee_key, provider_key, agency_key = ReserveOp.keys_of(
        op.employee_id, op.provider_id, hold["agency_id"], op.session_start
    )
    rate = work.rates.get((op.provider_id, op.year))
    if rate is None:
        raise FailedPrecondition(
            RuleCode.NO_CONTRACT, provider_key.subject, f"provider has no contract for {op.year}"
        )
    opening: int | None = None
    if employee_key not in work.accounts:
        organisation = work.organisations.get(hold["agency_id"], "")
        opening = work.policies.get((organisation, hold["staff_category"], op.year))
        if opening is None:
            raise FailedPrecondition(
                RuleCode.NO_ENTITLEMENT_POLICY,
                f"policy/{organisation}/{hold['staff_category']}/{op.year}",
                "no entitlement policy for this organisation, staff category and year",
            )
    for key, rule in (
        (provider_key, RuleCode.NO_CONTRACT),
        (agency_key, RuleCode.NO_BUDGET_POOL),
    ):
        if key not in work.accounts:
            raise FailedPrecondition(
                rule, key.subject, f"no {key.kind.value} account for {op.year}"
            )
    if week != hold["iso_week"] and (op.employee_id, week) in work.taken_weeks:
        raise FailedPrecondition(
            RuleCode.WEEKLY_LIMIT,
            employee_key.subject,
            f"WEEKLY_LIMIT: one session per person per week; {week} is taken",
            left={"iso_week": week},
        )
    given_back = dict(zip(hold_keys(hold), _charges(hold, hold["minutes"]), strict=True))
    moved = {**hold, "provider_id": op.provider_id, "hourly_rate_ntd": rate}
    moved["minutes"] = op.minutes
    needed = dict(
        zip((employee_key, provider_key, agency_key), _charges(moved, op.minutes), strict=True)
    )
    for key, amount in needed.items():
        totals = work.accounts[key].totals if key in work.accounts else Totals(opening or 0, 0, 0)
        credit = given_back.get(key, 0)
        require_room(key, Totals(totals.entitled, totals.held, totals.spent - credit), amount)

    # Every check passed: the old session goes back, the new one is spent.
    if opening is not None:
        employee = _Account(employee_key, 0, 0, 0, hold["staff_category"], new=True)
        work.accounts[employee_key] = employee
        work.change(
            employee,
            "ENTITLEMENT_OPEN",
            "policy",
            op.actor,
            "entitlement by policy",
            entitled=opening,
        )
    for key, amount in given_back.items():
        work.change(
            work.accounts[key], "RELEASE", hold["hold_id"], op.actor, "rescheduled", spent=-amount
        )
    for key, amount in needed.items():
        work.change(
            work.accounts[key], "COMMIT", hold["hold_id"], op.actor, "rescheduled", spent=amount
        )
    work.taken_weeks.discard((op.employee_id, hold["iso_week"]))
    work.taken_weeks.add((op.employee_id, week))
    hold.update(
        provider_id=op.provider_id,
        hourly_rate_ntd=rate,
        session_start=op.session_start,
        session_month=local(op.session_start).month,
        fiscal_year=op.year,
        iso_week=week,
        minutes=op.minutes,
        amount_ntd=needed[agency_key],
        booking_ref=op.booking_ref,
    )
    work.touch(hold)
    work.moved_holds[hold["hold_id"]] = hold
    return HoldView.of(hold)


async def _read(
    connection: AsyncConnection, work: _Batch, batch: Sequence[_Op], reference: ReferenceData
) -> None:
    """Reads and locks everything the batch's requests may touch."""
    reserves = [op for op in batch if isinstance(op, ReserveOp)]
    moves = [op for op in batch if isinstance(op, MoveOp)]
    hold_ids = {op.hold_id for op in batch if isinstance(op, CommitOp | ReleaseOp | MoveOp)}

    keys_wanted = {op.idempotency_key for op in reserves}
    weeks = {(op.employee_id, iso_week(op.session_start).label) for op in reserves}
    weeks |= {(op.employee_id, op.week) for op in moves}
    if hold_ids or reserves:
        # One read locks the holds to commit or release, finds the holds that
        # earlier tries of these reservations made, and the active holds
        # that already take the weeks asked for. (A week booked by a batch
        # still in flight elsewhere is caught by the unique index instead.)
        hold_rows = await _read_holds(connection, hold_ids, keys_wanted, weeks)
        for hold in hold_rows:
            week = (hold["employee_id"], hold["iso_week"])
            if hold["state"] in orm.ACTIVE_HOLD_STATES and week in weeks:
                work.taken_weeks.add(week)
            if hold["hold_id"] in hold_ids or hold["idempotency_key"] in keys_wanted:
                work.holds[hold["hold_id"]] = hold
                if hold["idempotency_key"] in keys_wanted:
                    work.by_key[hold["idempotency_key"]] = hold

    keys = {key for hold in work.holds.values() for key in hold_keys(hold)}
    for move in moves:
        moving = work.holds.get(move.hold_id)
        if moving is not None:
            keys |= set(
                ReserveOp.keys_of(
                    move.employee_id, move.provider_id, moving["agency_id"], move.session_start
                )
            )
    if moves:
        work.rates |= await reference.rates(connection, {(m.provider_id, m.year) for m in moves})
    if reserves:
        keys |= {key for op in reserves for key in op.account_keys()}
        work.organisations = await reference.organisations(
            connection, {op.agency_id for op in reserves}
        )
        work.rates |= await reference.rates(
            connection, {(op.provider_id, op.year) for op in reserves}
        )
        wanted = {
            (work.organisations[op.agency_id], op.staff_category, op.year)
            for op in reserves
            if op.agency_id in work.organisations
        }
        if wanted:
            work.policies = await reference.policies(connection, wanted)
    moved = [(m, work.holds[m.hold_id]) for m in moves if m.hold_id in work.holds]
    if moved:
        # A move into a year the employee has no account for yet opens it by
        # policy, as a reservation would.
        work.organisations |= await reference.organisations(
            connection, {hold["agency_id"] for _, hold in moved}
        )
        wanted = {
            (work.organisations[hold["agency_id"]], hold["staff_category"], m.year)
            for m, hold in moved
            if hold["agency_id"] in work.organisations
        }
        if wanted:
            work.policies |= await reference.policies(connection, wanted)

    if keys:
        work.accounts = await _lock_accounts(connection, keys)


async def _due_holds(
    connection: AsyncConnection, now: datetime, limit: int, touching: Sequence[AccountKey]
) -> list[dict[str, Any]]:
    query = select(HOLDS).where(HOLDS.c.state == HoldState.HELD.value, HOLDS.c.expires_at <= now)
    if touching:
        column = {
            AccountKind.EMPLOYEE: HOLDS.c.employee_id,
            AccountKind.PROVIDER: HOLDS.c.provider_id,
            AccountKind.AGENCY: HOLDS.c.agency_id,
        }
        query = query.where(
            or_(
                *(
                    and_(column[k.kind] == k.owner_id, HOLDS.c.fiscal_year == k.fiscal_year)
                    for k in touching
                )
            )
        )
    query = query.order_by(HOLDS.c.hold_id).limit(limit)
    if connection.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    return [dict(row._mapping) for row in await connection.execute(query)]


async def _read_holds(
    connection: AsyncConnection,
    hold_ids: set[str],
    keys_wanted: set[str],
    weeks: set[tuple[str, str]],
) -> list[dict[str, Any]]:
    """Locks and returns the holds with these ids or idempotency keys, and the
    active holds of these employee-weeks."""
    if connection.dialect.name == "postgresql":
        # One SQL text with array parameters: no compiling, no IN lists.
        rows = await connection.exec_driver_sql(
            _POSTGRES_READ_HOLDS,
            (
                list(hold_ids),
                list(keys_wanted),
                [employee for employee, _ in weeks],
                [week for _, week in weeks],
            ),
        )
        return [dict(row._mapping) for row in rows]
    rows = await connection.execute(
        select(HOLDS)
        .where(
            or_(
                HOLDS.c.hold_id.in_(padded(hold_ids)),
                HOLDS.c.idempotency_key.in_(padded(keys_wanted)),
                and_(
                    HOLDS.c.state.in_(orm.ACTIVE_HOLD_STATES),
                    tuple_(HOLDS.c.employee_id, HOLDS.c.iso_week).in_(padded(weeks)),
                ),
            )
        )
        .order_by(HOLDS.c.hold_id)
        .with_for_update()
    )
    return [dict(row._mapping) for row in rows]


async def _lock_accounts(
    connection: AsyncConnection, keys: Iterable[AccountKey]
) -> dict[AccountKey, _Account]:
    if connection.dialect.name == "postgresql":
        wanted = list(keys)
        rows = await connection.exec_driver_sql(
            _POSTGRES_LOCK_ACCOUNTS,
            (
                [key.kind.value for key in wanted],
                [key.owner_id for key in wanted],
                [key.fiscal_year for key in wanted],
            ),
        )
    else:
        columns = (ACCOUNTS.c.kind, ACCOUNTS.c.owner_id, ACCOUNTS.c.fiscal_year)
        rows = await connection.execute(
            select(ACCOUNTS)
            .where(tuple_(*columns).in_(padded({_pk(key) for key in keys})))
            .order_by(*columns)
            .with_for_update()
        )
    accounts = {}
    for row in rows:
        key = AccountKey(AccountKind(row.kind), row.owner_id, row.fiscal_year)
        accounts[key] = _Account(key, row.entitled, row.held, row.spent, row.staff_category)
    return accounts


_MOVED_COLUMNS = (
    "provider_id",
    "hourly_rate_ntd",
    "session_start",
    "session_month",
    "fiscal_year",
    "iso_week",
    "booking_ref",
)


async def _write(connection: AsyncConnection, work: _Batch) -> None:
    """Writes what the batch changed: accounts, holds and ledger entries."""
    if connection.dialect.name == "postgresql":
        await _write_postgres(connection, work)
    else:
        await _write_portable(connection, work)
    if work.moved_holds:
        await connection.execute(
            update(HOLDS)
            .where(HOLDS.c.hold_id == bindparam("k_hold"))
            .values({name: bindparam(f"v_{name}") for name in _MOVED_COLUMNS}),
            [
                {"k_hold": hold_id, **{f"v_{name}": h[name] for name in _MOVED_COLUMNS}}
                for hold_id, h in work.moved_holds.items()
            ],
        )


async def _write_portable(connection: AsyncConnection, work: _Batch) -> None:
    new_accounts = [a for a in work.accounts.values() if a.new]
    if new_accounts:
        await connection.execute(
            ACCOUNTS.insert(),
            [
                {
                    "kind": a.key.kind.value,
                    "owner_id": a.key.owner_id,
                    "fiscal_year": a.key.fiscal_year,
                    "entitled": a.entitled,
                    "held": a.held,
                    "spent": a.spent,
                    "staff_category": a.staff_category,
                }
                for a in new_accounts
            ],
        )
    changed = [a for a in work.accounts.values() if a.dirty and not a.new]
    if changed:
        await connection.execute(
            update(ACCOUNTS)
            .where(
                ACCOUNTS.c.kind == bindparam("k_kind"),
                ACCOUNTS.c.owner_id == bindparam("k_owner"),
                ACCOUNTS.c.fiscal_year == bindparam("k_year"),
            )
            .values(
                entitled=bindparam("v_entitled"),
                held=bindparam("v_held"),
                spent=bindparam("v_spent"),
            ),
            [
                {
                    "k_kind": a.key.kind.value,
                    "k_owner": a.key.owner_id,
                    "k_year": a.key.fiscal_year,
                    "v_entitled": a.entitled,
                    "v_held": a.held,
                    "v_spent": a.spent,
                }
                for a in changed
            ],
        )
    if work.new_holds:
        await connection.execute(HOLDS.insert(), work.new_holds)
    inserted = {h["hold_id"] for h in work.new_holds}
    changed_holds = [h for i, h in work.dirty_holds.items() if i not in inserted]
    if changed_holds:
        await connection.execute(
            update(HOLDS)
            .where(HOLDS.c.hold_id == bindparam("k_hold"))
            .values(
                state=bindparam("v_state"),
                minutes=bindparam("v_minutes"),
                amount_ntd=bindparam("v_amount"),
            ),
            [
                {
                    "k_hold": h["hold_id"],
                    "v_state": h["state"],
                    "v_minutes": h["minutes"],
                    "v_amount": h["amount_ntd"],
                }
                for h in changed_holds
            ],
        )
    if work.entries:
        await connection.execute(LEDGER.insert(), work.entries)


# Everything a batch writes, in one statement on PostgreSQL: five
# data-modifying CTEs fed by arrays. One round trip instead of five, and one
# SQL text whatever the batch's size, so it is prepared once per connection.
_HOLD_COLUMNS = (
    ("hold_id", "text"),
    ("employee_id", "text"),
    ("agency_id", "text"),
    ("provider_id", "text"),
    ("staff_category", "text"),
    ("fiscal_year", "int"),
    ("session_month", "int"),
    ("iso_week", "text"),
    ("session_start", "timestamptz"),
    ("hourly_rate_ntd", "bigint"),
    ("minutes", "int"),
    ("amount_ntd", "bigint"),
    ("group_size", "int"),
    ("group_index", "int"),
    ("state", "text"),
    ("expires_at", "timestamptz"),
    ("booking_ref", "text"),
    ("created_at", "timestamptz"),
    ("idempotency_key", "text"),
    ("fingerprint", "text"),
)
_LEDGER_COLUMNS = (
    ("recorded_at", "timestamptz"),
    ("account_kind", "text"),
    ("account_owner", "text"),
    ("fiscal_year", "int"),
    ("kind", "text"),
    ("delta_entitled", "bigint"),
    ("delta_held", "bigint"),
    ("delta_spent", "bigint"),
    ("actor", "text"),
    ("reason", "text"),
    ("reference", "text"),
)
_NEW_ACCOUNT_TYPES = ("text", "text", "int", "bigint", "bigint", "bigint", "text")
_ACCOUNT_TYPES = ("text", "text", "int", "bigint", "bigint", "bigint")
_HOLD_CHANGE_TYPES = ("text", "text", "int", "bigint")


def _arrays(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(types))


def _postgres_write_sql() -> str:
    n_new, n_acc, n_hold = len(_NEW_ACCOUNT_TYPES), len(_ACCOUNT_TYPES), len(_HOLD_COLUMNS)
    at_acc = 1 + n_new
    at_hold = at_acc + n_acc
    at_change = at_hold + n_hold
    at_ledger = at_change + len(_HOLD_CHANGE_TYPES)
    hold_names = ", ".join(name for name, _ in _HOLD_COLUMNS)
    ledger_names = ", ".join(name for name, _ in _LEDGER_COLUMNS)
    return f"""
WITH new_accounts AS (
  INSERT INTO quota_accounts (kind, owner_id, fiscal_year, entitled, held, spent, staff_category)
  SELECT * FROM unnest({_arrays(1, _NEW_ACCOUNT_TYPES)})
  RETURNING 1
), changed_accounts AS (
  UPDATE quota_accounts AS a
  SET entitled = v.entitled, held = v.held, spent = v.spent
  FROM unnest({_arrays(at_acc, _ACCOUNT_TYPES)})
    AS v(kind, owner_id, fiscal_year, entitled, held, spent)
  WHERE a.kind = v.kind AND a.owner_id = v.owner_id AND a.fiscal_year = v.fiscal_year
  RETURNING 1
), new_holds AS (
  INSERT INTO quota_holds ({hold_names})
  SELECT * FROM unnest({_arrays(at_hold, [kind for _, kind in _HOLD_COLUMNS])})
  RETURNING 1
), changed_holds AS (
  UPDATE quota_holds AS h
  SET state = v.state, minutes = v.minutes, amount_ntd = v.amount_ntd
  FROM unnest({_arrays(at_change, _HOLD_CHANGE_TYPES)}) AS v(hold_id, state, minutes, amount_ntd)
  WHERE h.hold_id = v.hold_id
  RETURNING 1
), entries AS (
  INSERT INTO quota_ledger ({ledger_names})
  SELECT * FROM unnest({_arrays(at_ledger, [kind for _, kind in _LEDGER_COLUMNS])})
  RETURNING 1
)
SELECT (SELECT count(*) FROM new_accounts), (SELECT count(*) FROM changed_accounts),
       (SELECT count(*) FROM new_holds), (SELECT count(*) FROM changed_holds),
       (SELECT count(*) FROM entries)
"""


_POSTGRES_WRITE = _postgres_write_sql()

_ACTIVE = ", ".join(f"'{state}'" for state in orm.ACTIVE_HOLD_STATES)
_POSTGRES_READ_HOLDS = f"""
SELECT {", ".join(HOLDS.c.keys())} FROM quota_holds
WHERE hold_id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])
   OR (state IN ({_ACTIVE})
       AND (employee_id, iso_week) IN (SELECT * FROM unnest($3::text[], $4::text[])))
ORDER BY hold_id
FOR UPDATE
"""
_POSTGRES_LOCK_ACCOUNTS = """
SELECT kind, owner_id, fiscal_year, entitled, held, spent, staff_category FROM quota_accounts
WHERE (kind, owner_id, fiscal_year) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))
ORDER BY kind, owner_id, fiscal_year
FOR UPDATE
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into one list per column (what unnest takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def _write_postgres(connection: AsyncConnection, work: _Batch) -> None:
    new = [
        (
            a.key.kind.value,
            a.key.owner_id,
            a.key.fiscal_year,
            a.entitled,
            a.held,
            a.spent,
            a.staff_category,
        )
        for a in work.accounts.values()
        if a.new
    ]
    changed = [
        (a.key.kind.value, a.key.owner_id, a.key.fiscal_year, a.entitled, a.held, a.spent)
        for a in work.accounts.values()
        if a.dirty and not a.new
    ]
    holds = [tuple(h[name] for name, _ in _HOLD_COLUMNS) for h in work.new_holds]
    inserted = {h["hold_id"] for h in work.new_holds}
    hold_changes = [
        (h["hold_id"], h["state"], h["minutes"], h["amount_ntd"])
        for hold_id, h in work.dirty_holds.items()
        if hold_id not in inserted
    ]
    entries = [tuple(e[name] for name, _ in _LEDGER_COLUMNS) for e in work.entries]
    parameters = (
        *_columns(new, len(_NEW_ACCOUNT_TYPES)),
        *_columns(changed, len(_ACCOUNT_TYPES)),
        *_columns(holds, len(_HOLD_COLUMNS)),
        *_columns(hold_changes, len(_HOLD_CHANGE_TYPES)),
        *_columns(entries, len(_LEDGER_COLUMNS)),
    )
    await connection.exec_driver_sql(_POSTGRES_WRITE, parameters)
