"""Each service's own metrics on the Prometheus endpoint, after real
traffic: quota balances per agency and provider, holds, bookings by
outcome, lapsed slot holds. Labels name institutions and outcomes only."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime import clock
from tests.conftest import Suite
from tests.county import RATE
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


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


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
    after = await _samples(suite)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("eap_matcher_bookings_total", outcome="held") == 2
    assert grew("eap_matcher_bookings_total", outcome="booked") == 1
    spent = _value(
        after, "eap_quota_agency_budget_ntd", agency="PT-HR", fiscal_year="2027", state="spent"
    )
    assert spent == RATE
    left = _value(
        after, "eap_quota_agency_budget_ntd", agency="PT-HR", fiscal_year="2027", state="left"
    )
    entitled = _value(
        after, "eap_quota_agency_budget_ntd", agency="PT-HR", fiscal_year="2027", state="entitled"
    )
    assert left == entitled - spent
    provider = found[0].counselor_id and "P1"
    assert _value(
        after, "eap_quota_provider_seconds", provider=provider, fiscal_year="2027", state="spent"
    ) in (0, 3600)
    assert ("eap_quota_holds_active", ()) in after

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
