"""Issue 14, acceptance 3: a county of agencies of 1 to 12 people; HR reads
everything the suite releases to it for the period, month by month as each
month closes (the usage summary, every agency's and provider's balance);
an attacker solving the linear system of those figures recovers no group
of fewer than five people."""

from __future__ import annotations

import datetime as dt
import random

from eap.quota.v1 import quota_pb2 as qpb
from services.quota.disclosure import Charge
from services.runtime import clock
from tests.access import Secured
from tests.conftest import TAIPEI
from tests.county import ORG, YEAR, at, reserve_request
from tests.quota.attacker import Row, solvable
from tests.quota.test_disclosure import atom, minutes, money, small_groups

RATES = {"Q1": 1200, "Q2": 2400, "Q3": 2000}  # NT$ an hour, which HR may read
PROVIDERS = tuple(RATES)
MONTHS = (1, 2, 3)


async def _county(suite: Secured) -> list[Charge]:
    """Agencies A01-A12 of 1-12 people, each person 1-3 sessions in the
    first quarter, with one of three providers; booked as the matcher
    books them (Reserve, then Commit)."""
    admin = suite.as_("admin", "eap-admin")
    quota = suite.quota
    for provider in PROVIDERS:
        await quota.SetProviderContract(
            qpb.SetProviderContractRequest(
                provider_id=provider,
                fiscal_year=YEAR,
                hourly_rate_ntd=RATES[provider],
                cap_minutes=60_000,
                reason="contract",
            ),
            metadata=admin,
        )
    rng = random.Random(14)
    charges = []
    for size in range(1, 13):
        agency = f"A{size:02d}"
        await quota.UpsertAgency(
            qpb.UpsertAgencyRequest(agency_id=agency, organisation=ORG, display_name=agency),
            metadata=admin,
        )
        await quota.TopUpBudget(
            qpb.TopUpBudgetRequest(
                idempotency_key=f"pool-{agency}",
                agency_id=agency,
                fiscal_year=YEAR,
                amount_ntd=1_000_000,
                reason="annual budget",
            ),
            metadata=admin,
        )
        for n in range(size):
            employee, category = f"{agency}-E{n}", rng.choice(("official", "teacher"))
            weeks = sorted(rng.sample(range(1, 13), rng.randint(1, 3)))  # one a week at most
            for week in weeks:
                provider, minutes = rng.choice(PROVIDERS), rng.choice((60, 90, 120))
                request = reserve_request(
                    f"{employee}-{week}",
                    employee=employee,
                    n_week=week,
                    minutes=minutes,
                    agency=agency,
                    provider=provider,
                    category=category,
                )
                hold = (await quota.Reserve(request, metadata=admin)).hold
                await quota.Commit(qpb.CommitRequest(hold_id=hold.hold_id), metadata=admin)
                month = (
                    at(dt.date.fromisocalendar(YEAR, week, 2))
                    .ToDatetime(tzinfo=dt.UTC)
                    .astimezone(TAIPEI)
                    .month
                )
                charges.append(
                    Charge(agency, category, month, provider, employee, minutes, hold.amount_ntd)
                )
    return charges


async def test_nothing_hr_reads_gives_away_a_small_group(secured_suite: Secured) -> None:
    suite = secured_suite
    charges = await _county(suite)
    hr = suite.as_("hr", "hr-1")
    agencies = sorted({c.agency_id for c in charges})
    equations: list[Row] = []
    exact_readings = 0
    for through in MONTHS:
        # HR reads on the day the month closes, and on the day before.
        for day in (7, 8):
            with clock.moved_to(dt.datetime(YEAR, through + 1, day, 9, tzinfo=TAIPEI)):
                summary = await suite.quota.GetUsageSummary(
                    qpb.GetUsageSummaryRequest(fiscal_year=YEAR), metadata=hr
                )
                for row in summary.rows:
                    assert row.month <= summary.through_month
                    if not row.suppressed:
                        assert row.people >= 5
                        key = (row.agency_id, row.staff_category, row.month)
                        cell = [
                            c for c in charges if (c.agency_id, c.staff_category, c.month) == key
                        ]
                        assert row.amount_ntd == sum(c.amount_ntd for c in cell)
                        assert row.minutes == sum(c.minutes for c in cell)
                        atoms = {atom(c) for c in cell}
                        equations += [minutes(atoms), money(atoms, RATES)]
                for kind, owners in (
                    (qpb.ACCOUNT_KIND_AGENCY, agencies),
                    (qpb.ACCOUNT_KIND_PROVIDER, PROVIDERS),
                ):
                    for owner in owners:
                        ref = qpb.AccountRef(kind=kind, id=owner, fiscal_year=YEAR)
                        balance = (
                            await suite.quota.GetBalance(
                                qpb.GetBalanceRequest(account=ref), metadata=hr
                            )
                        ).balance
                        assert balance.held == 0
                        if kind == qpb.ACCOUNT_KIND_PROVIDER:  # the contract shows it too
                            contract = await suite.quota.GetProviderContract(
                                qpb.GetProviderContractRequest(provider_id=owner, fiscal_year=YEAR),
                                metadata=hr,
                            )
                            assert contract.balance == balance
                            assert contract.hourly_rate_ntd == RATES[owner]
                        upto = [
                            c
                            for c in charges
                            if c.month <= balance.through_month
                            and owner in (c.agency_id, c.provider_id)
                        ]
                        if balance.band:
                            continue  # an interval, not an equation
                        exact_readings += 1
                        measure = sum(
                            c.amount_ntd if kind == qpb.ACCOUNT_KIND_AGENCY else c.minutes
                            for c in upto
                        )
                        assert balance.spent == measure
                        atoms = {atom(c) for c in upto}
                        equations.append(
                            money(atoms, RATES)
                            if kind == qpb.ACCOUNT_KIND_AGENCY
                            else minutes(atoms)
                        )
    assert exact_readings > 0 and len(equations) > exact_readings  # HR learns something
    assert solvable(equations, small_groups(charges, RATES)) == []
