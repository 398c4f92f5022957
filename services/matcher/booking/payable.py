"""What the quota service would refuse, known when slots are searched, so
that FindSlots offers no time that ConfirmBooking then refuses for a reason
it could have seen: no entitlement policy for the employee's staff
category, an agency without a budget (or unknown), a provider without a
contract, the employee's hours, the provider's cap or the agency's money
spent. The quota service answers that itself (Reserve with validate_only),
once per fiscal year and provider among the offers: one rule, in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.booking.cases import Case
from services.matcher.booking.slots import Offer
from services.matcher.orm import BookingRow
from services.matcher.quota_port import QuotaPort
from services.rules.codes import RuleCode
from services.rules.office_time import IsoWeek, fiscal_year_of, iso_week, local_day

# Refusals that do not depend on what a session costs or who else booked:
# a move (which gives its own session's minutes and money back) meets them too.
STRUCTURAL = frozenset(
    {
        RuleCode.NO_BUDGET_POOL,
        RuleCode.NO_ENTITLEMENT_POLICY,
        RuleCode.NO_CONTRACT,
        RuleCode.STAFF_CATEGORY_MISMATCH,
    }
)
WEEKS_TRIED = 3  # the diary knows the taken weeks; the quota is asked past them


@dataclass(frozen=True)
class Payable:
    offers: list[Offer]
    refusals: tuple[str, ...]  # the rules that kept offers out, each once


async def payable(
    quota: QuotaPort, case: Case, offers: Sequence[Offer], replaced: BookingRow | None
) -> Payable:
    groups: dict[tuple[int, str], list[Offer]] = {}
    for offer in offers:
        groups.setdefault((fiscal_year_of(offer.start), offer.counselor.provider_id), []).append(
            offer
        )
    keys = list(groups)
    found = await asyncio.gather(*(_refusal(quota, case, groups[k]) for k in keys))
    rules = dict(zip(keys, found, strict=True))
    if replaced is not None:
        # A move gives its own session back: only what no money changes counts.
        rules = {k: r if r in STRUCTURAL else None for k, r in rules.items()}
    kept = [o for o in offers if rules[(fiscal_year_of(o.start), o.counselor.provider_id)] is None]
    if replaced is not None:
        kept = await _with_quota_room(quota, case, kept, replaced)
    return Payable(kept, tuple(sorted({r for r in rules.values() if r is not None})))


async def _refusal(quota: QuotaPort, case: Case, group: list[Offer]) -> str | None:
    """The quota's answer for a session of `group` (one year, one provider):
    its first weeks tried, since a week taken is the diary's to know."""
    weeks: set[IsoWeek] = set()
    rule: str | None = None
    for offer in group:
        week = iso_week(offer.start)
        if week in weeks:
            continue
        weeks.add(week)
        rule = await quota.refusal(
            case.employee_id,
            case.agency_id,
            case.staff_category,
            offer.counselor.provider_id,
            offer.start,
            case.minutes,
        )
        if rule != RuleCode.WEEKLY_LIMIT or len(weeks) >= WEEKS_TRIED:
            break
    return None if rule == RuleCode.WEEKLY_LIMIT else rule


async def _with_quota_room(
    quota: QuotaPort, case: Case, offers: list[Offer], replaced: BookingRow
) -> list[Offer]:
    """Drops slots the quota could not pay for: the provider's hours, the
    employee's entitlement (once their account is open) and the agency's
    budget left in the slot's fiscal year. A booking a reschedule
    replaces gives its minutes back to its year's accounts. (The exact
    price is the quota service's to check when the booking is confirmed.)"""
    years = sorted({local_day(o.start).year for o in offers})
    room: dict[tuple[int, str, int], int | None] = {}
    for year in years:
        room[(qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year)] = await quota.left(
            qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year
        )
        room[(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)] = await quota.left(
            qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year
        )
        for provider in sorted({o.counselor.provider_id for o in offers}):
            room[(qpb.ACCOUNT_KIND_PROVIDER, provider, year)] = await quota.left(
                qpb.ACCOUNT_KIND_PROVIDER, provider, year
            )
    if replaced is not None:
        year = local_day(replaced.start).year
        for key in (
            (qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year),
            (qpb.ACCOUNT_KIND_PROVIDER, replaced.provider_id, year),
        ):
            if room.get(key) is not None:
                room[key] = (room[key] or 0) + replaced.minutes
        agency = (qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year)
        if room.get(agency) is not None:
            # The agency pays while its budget is above zero: the
            # replaced booking's cost, given back, makes it so.
            room[agency] = max(room[agency] or 0, 0) + 1

    def payable(offer: Offer) -> bool:
        year = local_day(offer.start).year
        agency = room[(qpb.ACCOUNT_KIND_AGENCY, case.agency_id, year)]
        employee = room[(qpb.ACCOUNT_KIND_EMPLOYEE, case.employee_id, year)]
        provider = room[(qpb.ACCOUNT_KIND_PROVIDER, offer.counselor.provider_id, year)]
        return (
            agency is not None
            and agency > 0
            and provider is not None
            and provider >= case.minutes
            and (employee is None or employee >= case.minutes)
        )

    return [o for o in offers if payable(o)]
