"""Issue 14, item 3: the quota's balance gauges on a real `/metrics` after
real traffic never name an agency or provider that fewer than
MIN_CELL_PEOPLE employees stand behind, and a series goes once its owner
falls under the threshold."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from eap.quota.v1 import quota_pb2 as pb
from services.quota.disclosure import MIN_CELL_PEOPLE, shown_owners
from tests.conftest import QuotaClient
from tests.county import ORG, RATE, YEAR, reserve_request, seed

BALANCE_GAUGES = ("eap_quota_agency_budget_ntd", "eap_quota_provider_seconds")
# Agency Ak has k employees with a booked session: A1 to A4 are small.
AGENCIES = {f"A{k}": k for k in range(1, 7)}


def _provider_of(agency: str, n: int) -> str:
    """P1 serves A1 to A5 (15 people), P2 five of A6's, P3 the sixth alone:
    P3 is withheld, and P2 with it, or P1's hours times the rate minus P2's
    would give P3's."""
    if agency != "A6":
        return "P1"
    return "P3" if n == 5 else "P2"


async def _scrape(quota: QuotaClient) -> str:
    url = f"http://127.0.0.1:{quota.server.metrics_port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())


def _balance_series(body: str) -> dict[tuple[str, str, str], float]:
    """(owner, fiscal year, state) of every balance series, with its value."""
    return {
        (
            s.labels.get("agency") or s.labels["provider"],
            s.labels["fiscal_year"],
            s.labels["state"],
        ): (s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name in BALANCE_GAUGES
    }


async def _book(quota: QuotaClient, key: str, employee: str, agency: str, provider: str) -> str:
    held = await quota.stub.Reserve(
        reserve_request(key, employee=employee, agency=agency, provider=provider)
    )
    await quota.stub.Commit(pb.CommitRequest(hold_id=held.hold.hold_id))
    return str(held.hold.hold_id)


async def test_no_balance_series_names_a_group_of_fewer_than_five(quota: QuotaClient) -> None:
    await seed(quota.stub)
    await quota.stub.SetProviderContract(
        pb.SetProviderContractRequest(
            provider_id="P3", fiscal_year=YEAR, hourly_rate_ntd=RATE, cap_minutes=6000, reason="c"
        )
    )
    holds: dict[str, list[str]] = {}
    for agency, people in AGENCIES.items():
        await quota.stub.UpsertAgency(
            pb.UpsertAgencyRequest(agency_id=agency, organisation=ORG, display_name=agency)
        )
        await quota.stub.TopUpBudget(
            pb.TopUpBudgetRequest(
                idempotency_key=f"budget-{agency}",
                agency_id=agency,
                fiscal_year=YEAR,
                amount_ntd=100_000,
                reason="annual budget",
            )
        )
        holds[agency] = [
            await _book(quota, f"{agency}-{n}", f"{agency}-E{n}", agency, _provider_of(agency, n))
            for n in range(people)
        ]
    await quota.service.reads.refresh_metrics(YEAR)
    body = await _scrape(quota)
    series = _balance_series(body)
    this_year = {owner for owner, year, _ in series if year == str(YEAR)}
    # PT-HR and PT-EDU (seed's) have no one: withheld with A1 to A4.
    assert this_year == {"A5", "A6", "P1"}, this_year
    for owner in ("A5", "A6"):
        spent = series[(owner, str(YEAR), "spent")]
        assert spent == AGENCIES[owner] * RATE
        left = series[(owner, str(YEAR), "left")]
        assert left == series[(owner, str(YEAR), "entitled")] - spent
    assert series[("P1", str(YEAR), "spent")] == 15 * 3600
    hidden = {*AGENCIES, "P2", "P3", "PT-HR", "PT-EDU"} - this_year
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            named = set(sample.labels.values()) & hidden
            assert not named, f"{sample.name} names {named}"
    assert "-E" not in body  # no employee id anywhere

    # A5 falls to four people: its series go at the next refresh. With A5
    # withheld P1 still stands for A1 to A4 and the others (14 people).
    await quota.stub.Release(
        pb.ReleaseRequest(hold_id=holds["A5"][0], reason="cancelled", booking_cancelled=True)
    )
    await quota.service.reads.refresh_metrics(YEAR)
    after = {owner for owner, year, _ in _balance_series(await _scrape(quota)) if year == str(YEAR)}
    assert after == {"A6", "P1"}, after


def test_a_lone_withheld_owner_takes_the_smallest_shown_with_it() -> None:
    def people(*sizes: int) -> dict[str, set[str]]:
        return {f"O{i}": {f"O{i}-{n}" for n in range(size)} for i, size in enumerate(sizes)}

    assert shown_owners(people(1, 2, 3, 4, 5, 6)) == {"O4", "O5"}  # 10 withheld together
    assert shown_owners(people(2, 7, 5)) == {"O1"}  # 2 alone would come back: 5 goes too
    assert shown_owners(people(2, 2, 9, 8)) == {"O2"}  # 2 + 2 is not five either
    assert shown_owners(people(MIN_CELL_PEOPLE, 9)) == {"O0", "O1"}
    assert shown_owners(people(4, 9)) == set()
    # One person in two small providers counts once.
    shared = {"P1": {"e1", "e2"}, "P2": {"e1", "e2", "e3"}, "P3": set(map(str, range(9)))}
    assert shown_owners(shared) == set()
