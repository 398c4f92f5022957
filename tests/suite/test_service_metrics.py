"""Each service's own metrics on the Prometheus endpoint, after real
traffic: quota balances per agency and provider, holds, bookings by
outcome, lapsed slot holds. Labels name institutions and outcomes only, and
an agency's or provider's balance shows only once MIN_CELL_PEOPLE people
stand behind it (tests/quota/test_metrics_disclosure.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.service import MatcherService
from services.quota.disclosure import MIN_CELL_PEOPLE
from services.quota.service import QuotaService
from services.runtime import clock
from services.runtime.tenancy import DEFAULT_TENANT
from tests.conftest import Suite
from tests.county import RATE, reserve_request
from tests.matcher.test_booking import book, case, hold, slots, submit


async def _samples(suite: Suite) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert suite.server is not None and suite.server.metrics_port
    url = f"http://127.0.0.1:{suite.server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
    assert "E1" not in body and "E2" not in body  # no employee ids anywhere
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _ours(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> list[tuple[tuple[str, str], ...]]:
    """The series of `name` for this suite's tenant: the registry is the
    process's, and a test before this one in the same worker may have
    served other tenants."""
    return [
        labels
        for series, labels in samples
        if series == name and ("tenant", DEFAULT_TENANT) in labels
    ]


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def enough_people(suite: Suite, already: int = 1) -> None:
    """Books an hour for other employees, through the quota, until PT-HR
    (where `already` people have sessions) and PT-EDU each have
    MIN_CELL_PEOPLE: below that their balances are not exported."""
    wanted = {"PT-HR": MIN_CELL_PEOPLE - already, "PT-EDU": MIN_CELL_PEOPLE}
    for agency, people in wanted.items():
        for n in range(people):
            held = await suite.quota.Reserve(
                reserve_request(f"more-{agency}-{n}", employee=f"X-{agency}-{n}", agency=agency)
            )
            await suite.quota.Commit(qpb.CommitRequest(hold_id=held.hold.hold_id))


async def test_quota_and_matcher_metrics_follow_the_traffic(suite: Suite) -> None:
    assert suite.server is not None
    before = await _samples(suite)
    await submit(suite, case())
    await submit(suite, case("K2", "E2"))
    found = await slots(suite)
    await book(suite, found[0])
    lapsing = await hold(suite, found[1], "K2")
    (quota,) = [s for s in suite.server.services if isinstance(s, QuotaService)]
    await quota.reads.refresh_metrics(2027)
    alone = await _samples(suite)
    # E1 alone at PT-HR: no balance series names it.
    assert not _ours(alone, "eap_quota_agency_budget_ntd")
    await enough_people(suite)
    await quota.reads.refresh_metrics(2027)
    after = await _samples(suite)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("eap_matcher_bookings_total", outcome="held") == 2
    assert grew("eap_matcher_bookings_total", outcome="booked") == 1
    spent = _value(
        after,
        "eap_quota_agency_budget_ntd",
        tenant=DEFAULT_TENANT,
        agency="PT-HR",
        fiscal_year="2027",
        state="spent",
    )
    assert spent == MIN_CELL_PEOPLE * RATE
    left = _value(
        after,
        "eap_quota_agency_budget_ntd",
        tenant=DEFAULT_TENANT,
        agency="PT-HR",
        fiscal_year="2027",
        state="left",
    )
    entitled = _value(
        after,
        "eap_quota_agency_budget_ntd",
        tenant=DEFAULT_TENANT,
        agency="PT-HR",
        fiscal_year="2027",
        state="entitled",
    )
    assert left == entitled - spent
    # P2 serves at most E1: withheld, and P1 with it, or P1's hours times
    # the rate, taken from the agencies' NT$, would give P2's.
    assert not _ours(after, "eap_quota_provider_seconds")
    assert ("eap_quota_holds_active", (("tenant", DEFAULT_TENANT),)) in after

    # The second hold lapses; a sweep writes it down and counts it once,
    # whether ours or the server's own upkeep loop (it runs every 0.2 s
    # here, on the moved clock too) gets there first.
    with clock.moved_to(clock.now() + dt.timedelta(minutes=11)):
        (matcher,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
        await matcher.bookings.sweep()
    lapsed = await _samples(suite)
    assert (
        _value(lapsed, "eap_matcher_holds_expired_total")
        - _value(after, "eap_matcher_holds_expired_total")
        == 1
    )
    assert lapsing.state == pb.BOOKING_STATE_HELD


# Every label the suite's metrics may carry. Outcomes, states, reasons,
# kinds, tenants (whole organisations) and names of code say nothing of a
# person; "agency" and "provider"
# only on the two balance gauges, which leave out small groups
# (services/quota/metrics.py). A new label must be judged before it joins.
OPERATIONAL_LABELS = {
    "grpc_type", "grpc_service", "grpc_method", "grpc_code",
    "service", "store", "role", "outcome", "state", "reason", "kind", "rule",
    "fiscal_year", "le", "tenant",
}  # fmt: skip
GROUP_LABELS = {
    "eap_quota_agency_budget_ntd": {"agency"},
    "eap_quota_provider_seconds": {"provider"},
}


async def test_every_label_is_operational_or_a_suppressed_group(suite: Suite) -> None:
    await submit(suite, case())
    await book(suite, (await slots(suite))[0])
    await enough_people(suite)
    assert suite.server is not None
    (quota,) = [s for s in suite.server.services if isinstance(s, QuotaService)]
    await quota.reads.refresh_metrics(2027)
    samples = await _samples(suite)
    seen = set()
    for name, labels in samples:
        family = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        allowed = OPERATIONAL_LABELS | GROUP_LABELS.get(family, set())
        if not name.startswith(("grpc_", "eap_")):
            continue  # the client library's own: process_*, python_*
        extra = {label for label, _ in labels} - allowed
        assert not extra, f"{name} carries {extra}"
        seen |= {label for label, _ in labels}
    assert {"agency", "grpc_method", "outcome"} <= seen  # the scan saw real series
