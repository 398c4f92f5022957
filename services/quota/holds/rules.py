"""The rules of a hold, applied to one transaction's working set in
arrival order, as if the requests ran one after another: a reservation
checked against the accounts, the weekly limit and the policy; commits,
releases and moves of a hold; what a lapsed hold gives back."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from services.quota.domain import (
    HoldState,
    Totals,
    require_room,
)
from services.quota.holds.requests import (
    CommitOp,
    HoldView,
    MoveOp,
    Op,
    ReleaseOp,
    Reservation,
    ReserveOp,
    hold_keys,
    share_of,
)
from services.quota.holds.work import Account, Batch
from services.rules.attendance import Attendance, Charge
from services.rules.codes import RuleCode
from services.rules.cost import session_cost_ntd
from services.rules.office_time import iso_week, local
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

log = logging.getLogger("eap.quota")


def charges(hold: dict[str, Any], minutes: int) -> tuple[int, int, int]:
    """What `minutes` of the hold's session cost its employee, provider and
    agency accounts: all three, unless the session did not take place and
    the tenant's policy (its `charge`) spares some of them."""
    share = share_of(hold)
    charge = Charge(hold.get("charge") or Charge.FULL)
    cost = share.of(session_cost_ntd(hold["hourly_rate_ntd"], minutes))
    return (
        minutes if charge.counts_entitlement else 0,
        share.of(minutes) if charge.pays_provider else 0,
        cost if charge.pays_provider else 0,
    )


def apply(work: Batch, op: Op, default_ttl: int) -> object:
    """Checks one request against the working set and applies it there; a
    refusal (ServiceError) changes nothing."""
    if isinstance(op, ReserveOp):
        return _reserve(work, op, default_ttl)
    if isinstance(op, CommitOp):
        return _commit(work, op)
    if isinstance(op, MoveOp):
        return _move(work, op)
    assert isinstance(op, ReleaseOp)
    return _release(work, op)


def _reserve(work: Batch, op: ReserveOp, default_ttl: int) -> Reservation:
    employee_key, provider_key, agency_key = op.account_keys()
    previous = None if op.validate_only else work.by_key.get(op.idempotency_key)
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

    # Every check passed: from here on the request changes things, unless
    # it only asks whether it would pass.
    hold_id = "" if op.validate_only else uuid.uuid4().hex
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
        "expires_at": work.now + timedelta(seconds=op.ttl_seconds or default_ttl),
        "booking_ref": op.booking_ref,
        "created_at": work.now,
        "idempotency_key": op.idempotency_key,
        "fingerprint": op.fingerprint,
        "outcome": "",
        "charge": "",
    }
    if op.validate_only:
        unopened = Account(employee_key, opening or 0, 0, 0, op.staff_category, new=True)
        return Reservation(
            HoldView.of(hold), (employee or unopened).view(), provider.view(), agency.view()
        )
    if employee is None:
        employee = Account(employee_key, 0, 0, 0, op.staff_category, new=True)
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
    work.holds[hold_id] = hold
    work.new_holds.append(hold)
    work.taken_weeks.add((op.employee_id, week))
    work.by_key[op.idempotency_key] = hold
    return Reservation(HoldView.of(hold), employee.view(), provider.view(), agency.view())


def _locked_hold(work: Batch, hold_id: str) -> dict[str, Any]:
    hold = work.holds.get(hold_id)
    if hold is None:
        raise NotFound("hold_id names no hold")
    return hold


def give_back(work: Batch, hold: dict[str, Any], kind: str, actor: str, reason: str) -> None:
    """Returns everything an active hold took, as `kind` (RELEASE or EXPIRE)."""
    state = HoldState(hold["state"])
    column = "held" if state is HoldState.HELD else "spent"
    for key, amount in zip(hold_keys(hold), charges(hold, hold["minutes"]), strict=True):
        work.change(work.accounts[key], kind, hold["hold_id"], actor, reason, **{column: -amount})
    hold["state"] = (HoldState.EXPIRED if kind == "EXPIRE" else HoldState.RELEASED).value
    work.taken_weeks.discard((hold["employee_id"], hold["iso_week"]))
    work.touch(hold)


def _commit(work: Batch, op: CommitOp) -> HoldView:
    hold = _locked_hold(work, op.hold_id)
    if op.outcome is not Attendance.ATTENDED:
        return _settle_missed(work, hold, op)
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
    changes = zip(charges(hold, hold["minutes"]), charges(hold, used), strict=True)
    for key, (old, new) in zip(hold_keys(hold), changes, strict=True):
        account = work.accounts[key]
        if state is HoldState.HELD:
            work.change(account, kind, hold["hold_id"], op.actor, held=-old, spent=new)
        elif old != new:
            work.change(account, kind, hold["hold_id"], op.actor, spent=new - old)
    hold["minutes"], hold["amount_ntd"] = used, charges(hold, used)[2]
    hold["state"] = (HoldState.COMPLETED if op.completed else HoldState.BOOKED).value
    work.touch(hold)
    return HoldView.of(hold)


def _settle_missed(work: Batch, hold: dict[str, Any], op: CommitOp) -> HoldView:
    """A booked session that did not take place (a no-show, a late
    cancellation), charged as the tenant's policy says: each account keeps
    what the charge puts on it and gets the rest back, in entries under
    the outcome's code; charged nothing, the hold is given back and its
    week is free again (rules/attendance.py)."""
    state = HoldState(hold["state"])
    if hold.get("outcome") == op.outcome.value and state in (
        HoldState.COMPLETED,
        HoldState.RELEASED,
    ):
        return HoldView.of(hold)  # a retried settlement
    if state is not HoldState.BOOKED:
        raise FailedPrecondition(
            RuleCode.NOT_BOOKED, "hold", "only a booked session can be missed or cancelled late"
        )
    reason = (op.outcome.rule or RuleCode.NO_SHOW).value
    if op.charge is Charge.NONE:
        give_back(work, hold, "RELEASE", op.actor, reason)
        hold["outcome"], hold["charge"] = op.outcome.value, op.charge.value
        return HoldView.of(hold)
    spent = charges(hold, hold["minutes"])
    hold["outcome"], hold["charge"] = op.outcome.value, op.charge.value
    kept = charges(hold, hold["minutes"])
    for key, was, now in zip(hold_keys(hold), spent, kept, strict=True):
        account = work.accounts[key]
        work.change(account, "COMPLETE", hold["hold_id"], op.actor, reason, spent=now - was)
    hold["amount_ntd"] = kept[2]
    hold["state"] = HoldState.COMPLETED.value
    work.touch(hold)
    return HoldView.of(hold)


def _release(work: Batch, op: ReleaseOp) -> HoldView:
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


def _move(work: Batch, op: MoveOp) -> HoldView:
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
    given_back = dict(zip(hold_keys(hold), charges(hold, hold["minutes"]), strict=True))
    moved = {**hold, "provider_id": op.provider_id, "hourly_rate_ntd": rate}
    moved["minutes"] = op.minutes
    needed = dict(
        zip((employee_key, provider_key, agency_key), charges(moved, op.minutes), strict=True)
    )
    for key, amount in needed.items():
        totals = work.accounts[key].totals if key in work.accounts else Totals(opening or 0, 0, 0)
        credit = given_back.get(key, 0)
        require_room(key, Totals(totals.entitled, totals.held, totals.spent - credit), amount)

    # Every check passed: the old session goes back, the new one is spent.
    if opening is not None:
        employee = Account(employee_key, 0, 0, 0, hold["staff_category"], new=True)
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
