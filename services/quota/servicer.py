"""gRPC translation for the quota service: messages in, commands out, results back."""

from __future__ import annotations

from typing import Any

from grpc import aio

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.quota.domain import (
    AccountKey,
    AccountKind,
    Balance,
    HoldState,
    current_fiscal_year,
)
from services.quota.funding import Funding, GrantCommand
from services.quota.holds.requests import HoldView
from services.quota.ledger import QuotaLedger, ReserveCommand
from services.quota.ledger_reads import LedgerReads
from services.rules.attendance import Attendance, Charge
from services.rules.cost import Share
from services.runtime import clock, paging
from services.runtime.auth import current_identity
from services.runtime.errors import InvalidArgument
from services.runtime.fields import moment, timestamp

Context = aio.ServicerContext[Any, Any]

_KINDS = {
    pb.ACCOUNT_KIND_EMPLOYEE: AccountKind.EMPLOYEE,
    pb.ACCOUNT_KIND_PROVIDER: AccountKind.PROVIDER,
    pb.ACCOUNT_KIND_AGENCY: AccountKind.AGENCY,
}
_KIND_PB = {kind: number for number, kind in _KINDS.items()}
_STATES = {
    HoldState.HELD: pb.HOLD_STATE_HELD,
    HoldState.BOOKED: pb.HOLD_STATE_BOOKED,
    HoldState.COMPLETED: pb.HOLD_STATE_COMPLETED,
    HoldState.RELEASED: pb.HOLD_STATE_RELEASED,
    HoldState.EXPIRED: pb.HOLD_STATE_EXPIRED,
}
_UNITS = {"minutes": pb.UNIT_MINUTES, "ntd": pb.UNIT_NTD}
MAX_PAGE = 1000
MAX_CHARGES_PAGE = 5000


def _year(year: int) -> int:
    return year or current_fiscal_year(clock.now())


def account_key(ref: pb.AccountRef, field: str = "account") -> AccountKey:
    if ref.kind not in _KINDS:
        raise InvalidArgument.single(f"{field}.kind", "EMPLOYEE, PROVIDER or AGENCY")
    return AccountKey(_KINDS[ref.kind], ref.id, _year(ref.fiscal_year))


def balance_pb(balance: Balance) -> pb.Balance:
    key = balance.key
    return pb.Balance(
        account=pb.AccountRef(
            kind=_KIND_PB[key.kind], id=key.owner_id, fiscal_year=key.fiscal_year
        ),
        unit=_UNITS[balance.unit],
        entitled=balance.totals.entitled,
        held=balance.totals.held,
        spent=balance.totals.spent,
        left=balance.totals.left,
        band=balance.band,
        through_month=balance.through_month,
    )


def hold_pb(hold: HoldView) -> pb.Hold:
    return pb.Hold(
        hold_id=hold.hold_id,
        state=_STATES[HoldState(hold.state)],
        fiscal_year=hold.fiscal_year,
        iso_week=hold.iso_week,
        minutes=hold.minutes,
        amount_ntd=hold.amount_ntd,
        expires_at=timestamp(hold.expires_at),
        booking_ref=hold.booking_ref,
        agency_id=hold.agency_id,
        provider_id=hold.provider_id,
        provider_minutes=hold.provider_minutes,
        group=pb.GroupShare(size=hold.share.size, index=hold.share.index)
        if hold.share.size > 1
        else None,
        hourly_rate_ntd=hold.hourly_rate_ntd,
        session_start=timestamp(hold.session_start),
        outcome=_OUTCOME_PB.get(hold.outcome, pb.SESSION_OUTCOME_UNSPECIFIED),
        charge=_CHARGE_PB.get(hold.charge, pb.CHARGE_UNSPECIFIED),
    )


_OUTCOMES = {
    pb.SESSION_OUTCOME_UNSPECIFIED: Attendance.ATTENDED,
    pb.SESSION_OUTCOME_ATTENDED: Attendance.ATTENDED,
    pb.SESSION_OUTCOME_NO_SHOW: Attendance.NO_SHOW,
    pb.SESSION_OUTCOME_LATE_CANCELLATION: Attendance.LATE_CANCELLATION,
}
_OUTCOME_PB = {
    Attendance.NO_SHOW.value: pb.SESSION_OUTCOME_NO_SHOW,
    Attendance.LATE_CANCELLATION.value: pb.SESSION_OUTCOME_LATE_CANCELLATION,
}
_CHARGES = {
    pb.CHARGE_FULL: Charge.FULL,
    pb.CHARGE_PROVIDER_PAID: Charge.PROVIDER_PAID,
    pb.CHARGE_ENTITLEMENT_COUNTED: Charge.ENTITLEMENT_COUNTED,
    pb.CHARGE_NONE: Charge.NONE,
}
_CHARGE_PB = {charge.value: value for value, charge in _CHARGES.items()}


def _after_entry(token: str) -> int:
    key = paging.after(token)
    if key is None:
        return 0
    # Entry ids are int64: more digits than that (or other digits than ASCII's)
    # were never a token of ours.
    if not (key.isascii() and key.isdigit() and len(key) <= 18):
        raise InvalidArgument.single("page_token", "not a token this service gave")
    return int(key)


class QuotaServicer(quota_pb2_grpc.QuotaServiceServicer):
    def __init__(self, ledger: QuotaLedger, funding: Funding, reads: LedgerReads) -> None:
        self._ledger = ledger
        self._funding = funding
        self._reads = reads

    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> pb.ReserveResponse:
        command = ReserveCommand(
            idempotency_key=request.idempotency_key,
            employee_id=request.employee_id,
            agency_id=request.agency_id,
            staff_category=request.staff_category,
            provider_id=request.provider_id,
            session_start=moment(request.session_start, "session_start")
            if request.HasField("session_start")
            else None,
            minutes=request.minutes,
            hold_ttl_seconds=request.hold_ttl_seconds,
            booking_ref=request.booking_ref,
            share=Share(request.group.size, request.group.index)
            if request.HasField("group")
            else None,
            validate_only=request.validate_only,
        )
        result = await self._ledger.reserve(command, current_identity().subject)
        return pb.ReserveResponse(
            hold=hold_pb(result.hold),
            employee=balance_pb(result.employee),
            provider=balance_pb(result.provider),
            agency=balance_pb(result.agency),
        )

    async def Commit(self, request: pb.CommitRequest, context: Context) -> pb.CommitResponse:
        outcome = _OUTCOMES.get(request.outcome)
        if outcome is None:
            raise InvalidArgument.single("outcome", "attended, no-show or late cancellation")
        hold = await self._ledger.commit(
            request.hold_id,
            request.minutes,
            request.completed,
            current_identity().subject,
            outcome,
            _CHARGES.get(request.charge),
        )
        return pb.CommitResponse(hold=hold_pb(hold))

    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        hold = await self._ledger.release(
            request.hold_id,
            request.reason,
            current_identity().subject,
            booking_cancelled=request.booking_cancelled,
        )
        return pb.ReleaseResponse(hold=hold_pb(hold))

    async def Move(self, request: pb.MoveRequest, context: Context) -> pb.MoveResponse:
        hold = await self._ledger.move(
            request.hold_id,
            request.employee_id,
            request.provider_id,
            moment(request.session_start, "session_start")
            if request.HasField("session_start")
            else None,
            request.minutes,
            request.booking_ref,
            current_identity().subject,
        )
        return pb.MoveResponse(hold=hold_pb(hold))

    async def Grant(self, request: pb.GrantRequest, context: Context) -> pb.GrantResponse:
        grant_id, balance = await self._funding.grant(
            GrantCommand(
                idempotency_key=request.idempotency_key,
                account=account_key(request.account),
                minutes=request.minutes,
                approval_reference=request.approval_reference,
                approver=request.approver,
                reason=request.reason,
            ),
            current_identity().subject,
        )
        return pb.GrantResponse(grant_id=grant_id, balance=balance_pb(balance))

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: Context
    ) -> pb.GetBalanceResponse:
        balance = await self._reads.balance(account_key(request.account))
        return pb.GetBalanceResponse(balance=balance_pb(balance))

    async def ListLedger(
        self, request: pb.ListLedgerRequest, context: Context
    ) -> pb.ListLedgerResponse:
        size = paging.page_size(request.page_size, 100, MAX_PAGE)
        key = account_key(request.account) if request.HasField("account") else None
        entries = await self._reads.ledger(key, _after_entry(request.page_token), size + 1)
        page = entries[:size]
        return pb.ListLedgerResponse(
            entries=[
                pb.LedgerEntry(
                    entry_id=e.entry_id,
                    recorded_at=timestamp(e.recorded_at),
                    account=pb.AccountRef(
                        kind=_KIND_PB[AccountKind(e.account_kind)],
                        id=e.account_owner,
                        fiscal_year=e.fiscal_year,
                    ),
                    kind=e.kind,
                    delta_entitled=e.delta_entitled,
                    delta_held=e.delta_held,
                    delta_spent=e.delta_spent,
                    actor=e.actor,
                    reason=e.reason,
                    reference=e.reference,
                )
                for e in page
            ],
            next_page_token=paging.page_token(page[-1].entry_id) if len(entries) > size else "",
        )

    async def ListCharges(
        self, request: pb.ListChargesRequest, context: Context
    ) -> pb.ListChargesResponse:
        size = paging.page_size(request.page_size, 1000, MAX_CHARGES_PAGE)
        after = paging.after(request.page_token) or ""
        holds = await self._reads.charges(after, size + 1)
        page = holds[:size]
        return pb.ListChargesResponse(
            holds=[hold_pb(hold) for hold in page],
            next_page_token=paging.page_token(page[-1].hold_id) if len(holds) > size else "",
        )

    async def GetUsageSummary(
        self, request: pb.GetUsageSummaryRequest, context: Context
    ) -> pb.GetUsageSummaryResponse:
        rows, through = await self._reads.usage(_year(request.fiscal_year), request.organisation)
        return pb.GetUsageSummaryResponse(
            through_month=through,
            rows=[
                pb.UsageRow(
                    agency_id=r.agency_id,
                    staff_category=r.staff_category,
                    month=r.month,
                    sessions=r.sessions,
                    minutes=r.minutes,
                    amount_ntd=r.amount_ntd,
                    people=r.people,
                    suppressed=r.suppressed,
                    no_shows=r.no_shows,
                    late_cancellations=r.late_cancellations,
                )
                for r in rows
            ],
        )

    async def ListAgencies(
        self, request: pb.ListAgenciesRequest, context: Context
    ) -> pb.ListAgenciesResponse:
        agencies = await self._reads.agencies(request.organisation)
        return pb.ListAgenciesResponse(
            agencies=[
                pb.Agency(
                    agency_id=a.agency_id, organisation=a.organisation, display_name=a.display_name
                )
                for a in agencies
            ]
        )

    async def UpsertAgency(
        self, request: pb.UpsertAgencyRequest, context: Context
    ) -> pb.UpsertAgencyResponse:
        await self._funding.upsert_agency(
            request.agency_id,
            request.organisation,
            request.display_name,
            current_identity().subject,
        )
        return pb.UpsertAgencyResponse(agency_id=request.agency_id)

    async def SetProviderContract(
        self, request: pb.SetProviderContractRequest, context: Context
    ) -> pb.SetProviderContractResponse:
        balance = await self._funding.set_contract(
            request.provider_id,
            request.fiscal_year,
            request.hourly_rate_ntd,
            request.cap_minutes,
            request.reason,
            current_identity().subject,
        )
        return pb.SetProviderContractResponse(balance=balance_pb(balance))

    async def GetProviderContract(
        self, request: pb.GetProviderContractRequest, context: Context
    ) -> pb.GetProviderContractResponse:
        rate, balance = await self._funding.contract(
            request.provider_id, _year(request.fiscal_year)
        )
        shown = await self._reads.as_shown(balance)  # HR's as the disclosure rules allow
        return pb.GetProviderContractResponse(hourly_rate_ntd=rate, balance=balance_pb(shown))

    async def SetEntitlementPolicy(
        self, request: pb.SetEntitlementPolicyRequest, context: Context
    ) -> pb.SetEntitlementPolicyResponse:
        await self._funding.set_policy(
            request.organisation,
            request.staff_category,
            request.fiscal_year,
            request.minutes,
            current_identity().subject,
        )
        return pb.SetEntitlementPolicyResponse()

    async def TopUpBudget(
        self, request: pb.TopUpBudgetRequest, context: Context
    ) -> pb.TopUpBudgetResponse:
        balance = await self._funding.top_up(
            request.idempotency_key,
            request.agency_id,
            request.fiscal_year,
            request.amount_ntd,
            request.reason,
            current_identity().subject,
        )
        return pb.TopUpBudgetResponse(balance=balance_pb(balance))

    async def TransferBudget(
        self, request: pb.TransferBudgetRequest, context: Context
    ) -> pb.TransferBudgetResponse:
        giver, taker = await self._funding.transfer(
            request.idempotency_key,
            request.from_agency_id,
            request.to_agency_id,
            request.fiscal_year,
            request.amount_ntd,
            request.reason,
            current_identity().subject,
        )
        return pb.TransferBudgetResponse(
            from_balance=balance_pb(giver), to_balance=balance_pb(taker)
        )

    async def Ping(self, request: pb.PingRequest, context: Context) -> pb.PingResponse:
        return pb.PingResponse()
