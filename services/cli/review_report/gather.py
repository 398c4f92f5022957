"""What the HR review report reads, over gRPC, from the three services:
the matcher's review of the period (GetProgrammeReview), the quota's budget
execution (ListAgencies, GetUsageSummary, and GetBalance and
GetProviderContract for each agency and provider) and the calendar's plans with their attendance
(GetPlan, GetAttendanceReport).

Everything read is an aggregate or the id of an agency, a provider or an
activity, as the services release it to the caller's role (HR's figures are
already withheld or banded by the services' disclosure rules). The one
individual-level read, the calendar's attendance lines of a governance
meeting or a training, is reduced here to counts per activity, and withheld
below the disclosure threshold like any other figure.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import grpc

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2_grpc
from eap.matcher.v1 import review_pb2 as rpb
from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc
from services.rules.disclosure import MIN_CELL_PEOPLE
from services.rules.office_time import OFFICE_ZONE
from services.runtime.client_language import call_metadata
from services.runtime.tls import client_channel

TIMEOUT = 60.0


@dataclass(frozen=True)
class AgencyBudget:
    agency_id: str
    name: str
    balance: qpb.Balance | None  # the fiscal year's, as released; None: no budget
    period_sessions: int | None  # None: a month of the period is withheld
    period_ntd: int | None


@dataclass(frozen=True)
class ProviderBudget:
    provider_id: str
    hourly_rate_ntd: int
    balance: qpb.Balance | None  # None: no contract for the fiscal year


@dataclass(frozen=True)
class ActivityAttendance:
    plan_name: str
    activity_id: str
    title: str
    kind: str  # "meeting", "training" or "group"
    events: int  # held (not cancelled) in the period
    people: int | None  # distinct people with attendance recorded; None: withheld
    attendance_rate: float | None  # attended / recorded, over the plan so far
    full_attendance: int | None  # people who came to every event so far


@dataclass(frozen=True)
class ReviewData:
    review: rpb.GetProgrammeReviewResponse
    through_month: int  # the budget figures' last month; 0: live figures
    agencies: list[AgencyBudget]
    providers: list[ProviderBudget]
    activities: list[ActivityAttendance]


@dataclass(frozen=True)
class Addresses:
    matcher: str
    quota: str
    calendar: str


async def gather(addresses: Addresses, period: str, plan_ids: list[str]) -> ReviewData:
    """The report's figures for `period`, every registered agency's and
    provider's budget of its fiscal year, the attendance of `plan_ids`."""
    metadata = call_metadata()
    async with AsyncExitStack() as stack:
        opened: dict[str, grpc.aio.Channel] = {}
        for address in {addresses.matcher, addresses.quota, addresses.calendar}:
            opened[address] = await stack.enter_async_context(client_channel(address))
        matcher = matcher_pb2_grpc.MatcherServiceStub(opened[addresses.matcher])
        quota = quota_pb2_grpc.QuotaServiceStub(opened[addresses.quota])
        calendar = calendar_pb2_grpc.CalendarServiceStub(opened[addresses.calendar])
        review = await matcher.GetProgrammeReview(
            rpb.GetProgrammeReviewRequest(period=period), metadata=metadata, timeout=TIMEOUT
        )
        first, last = date.fromisoformat(review.first_day), date.fromisoformat(review.last_day)
        usage = await quota.GetUsageSummary(
            qpb.GetUsageSummaryRequest(fiscal_year=first.year), metadata=metadata, timeout=TIMEOUT
        )
        registered = await quota.ListAgencies(
            qpb.ListAgenciesRequest(), metadata=metadata, timeout=TIMEOUT
        )
        agencies = [
            await _agency(quota, agency, usage, first, last) for agency in registered.agencies
        ]
        providers = [await _provider(quota, p, first.year) for p in review.provider_ids]
        activities = [
            activity
            for plan in plan_ids
            for activity in await _attendance(calendar, plan, first, last)
        ]
    return ReviewData(review, usage.through_month, agencies, providers, activities)


def _in_period(
    rows: list[qpb.UsageRow], first: date, last: date, through_month: int
) -> tuple[int | None, int | None]:
    """An agency's sessions and NT$ in the period's months, or None where a
    month of it is withheld (a sum over what is shown would be too low)."""
    months = range(first.month, last.month + 1)
    counted = [
        r for r in rows if r.month in months and (not through_month or r.month <= through_month)
    ]
    if any(r.suppressed for r in counted):
        return None, None
    return sum(r.sessions for r in counted), sum(r.amount_ntd for r in counted)


async def _agency(
    quota: quota_pb2_grpc.QuotaServiceAsyncStub,
    agency: qpb.Agency,
    usage: qpb.GetUsageSummaryResponse,
    first: date,
    last: date,
) -> AgencyBudget:
    account = qpb.AccountRef(
        kind=qpb.ACCOUNT_KIND_AGENCY, id=agency.agency_id, fiscal_year=first.year
    )
    rows = [r for r in usage.rows if r.agency_id == agency.agency_id]
    sessions, ntd = _in_period(rows, first, last, usage.through_month)
    try:
        answer = await quota.GetBalance(
            qpb.GetBalanceRequest(account=account), metadata=call_metadata(), timeout=TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:  # no pool opened for the year
            raise
        return AgencyBudget(agency.agency_id, agency.display_name, None, sessions, ntd)
    return AgencyBudget(agency.agency_id, agency.display_name, answer.balance, sessions, ntd)


async def _provider(
    quota: quota_pb2_grpc.QuotaServiceAsyncStub, provider_id: str, year: int
) -> ProviderBudget:
    try:
        answer = await quota.GetProviderContract(
            qpb.GetProviderContractRequest(provider_id=provider_id, fiscal_year=year),
            metadata=call_metadata(),
            timeout=TIMEOUT,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
            return ProviderBudget(provider_id, 0, None)
        raise
    if not answer.balance.entitled and not answer.hourly_rate_ntd:
        return ProviderBudget(provider_id, 0, None)
    return ProviderBudget(provider_id, answer.hourly_rate_ntd, answer.balance)


def _moment(day: date) -> datetime:
    return datetime.combine(day, time(0), OFFICE_ZONE)


async def _attendance(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub, plan_id: str, first: date, last: date
) -> list[ActivityAttendance]:
    """Each activity of the plan held in the period, its attendance reduced
    to counts (and withheld under the disclosure threshold)."""
    plan = await calendar.GetPlan(
        cpb.GetPlanRequest(plan_id=plan_id), metadata=call_metadata(), timeout=TIMEOUT
    )
    start, end = _moment(first), _moment(last + timedelta(days=1))
    held: dict[str, list[cpb.PlannedEvent]] = {}
    for event in plan.events:
        if not event.cancelled and start <= event.start.ToDatetime(OFFICE_ZONE) < end:
            held.setdefault(event.activity_id, []).append(event)
    if not held:
        return []
    report = await calendar.GetAttendanceReport(
        cpb.GetAttendanceReportRequest(plan_id=plan_id), metadata=call_metadata(), timeout=TIMEOUT
    )
    found = []
    for activity_id, events in held.items():
        lines = [x for x in report.lines if x.activity_id == activity_id and x.recorded]
        shown = len(lines) >= MIN_CELL_PEOPLE
        recorded = sum(x.recorded for x in lines)
        found.append(
            ActivityAttendance(
                plan_name=plan.name,
                activity_id=activity_id,
                title=events[0].title,
                kind=events[0].kind,
                events=len(events),
                people=len(lines) if shown else None,
                attendance_rate=sum(x.attended for x in lines) / recorded if shown else None,
                full_attendance=sum(x.full_attendance for x in lines) if shown else None,
            )
        )
    return found
