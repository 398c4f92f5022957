"""Races on one booking across two `eapctl serve all` replicas on one
PostgreSQL database: two confirmations of one hold, a confirmation and a
cancellation, a reschedule and a cancellation, two reschedules of one
booking. Each round starts both calls at once on different replicas; once
both have answered, nothing may be under way, the booking's state and the
ledger must agree, and the check across services (`eapctl verify`) must
find nothing.

`make test` runs EAP_RACE_ROUNDS rounds of each (default 15);
`EAP_RACE_ROUNDS=200` is the acceptance run (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.cli.consistency import check
from services.runtime import database
from tests import replicas
from tests.booking_world import COUNSELORS, Race, Slots, Stub, open_county, under_way
from tests.booking_world import answer as _answer
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUNDS = int(os.environ.get("EAP_RACE_ROUNDS", "15"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with replicas.cluster(tmp_path, ["all"], 2, "eap.matcher.v1.MatcherService") as running:
        yield running


@pytest_asyncio.fixture
async def engine(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    made = database.create_engine(cluster.database_url)
    yield made
    await made.dispose()


async def two_confirms(race: Race) -> tuple[str, str]:
    held = await race.hold(await race.case(), race.slots.take())
    a, b = await asyncio.gather(_answer(race.confirm(0, held)), _answer(race.confirm(1, held)))
    return a, b


async def confirm_and_cancel(race: Race) -> tuple[str, str]:
    held = await race.hold(await race.case(), race.slots.take())
    a, b = await asyncio.gather(_answer(race.confirm(0, held)), _answer(race.cancel(1, held)))
    return a, b


async def reschedule_and_cancel(race: Race) -> tuple[str, str]:
    case_id, booking_id, same_day = await race.booked()
    # Within the week (the same day), where the weekly rule bites hardest.
    new = await race.hold(case_id, same_day[0], replaces=booking_id)
    a, b = await asyncio.gather(
        _answer(race.reschedule(0, booking_id, new)), _answer(race.cancel(1, booking_id))
    )
    return a, b


async def two_reschedules(race: Race) -> tuple[str, str]:
    case_id, booking_id, same_day = await race.booked()
    first = await race.hold(case_id, same_day[0], replaces=booking_id)
    # The first new hold takes the week: the second is in a later one.
    later = race.slots.day(after=same_day[0][1].date())[0]
    second = await race.hold(case_id, later, replaces=booking_id)
    a, b = await asyncio.gather(
        _answer(race.reschedule(0, booking_id, first)),
        _answer(race.reschedule(1, booking_id, second)),
    )
    return a, b


KINDS: dict[str, Callable[[Race], Awaitable[tuple[str, str]]]] = {
    "two confirms": two_confirms,
    "confirm and cancel": confirm_and_cancel,
    "reschedule and cancel": reschedule_and_cancel,
    "two reschedules": two_reschedules,
}


async def test_races_on_one_booking_leave_bookings_and_ledger_agreeing(
    cluster: Cluster, engine: AsyncEngine
) -> None:
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    try:
        stubs: list[Stub] = [matcher_pb2_grpc.MatcherServiceStub(c) for c in channels]
        quota = quota_pb2_grpc.QuotaServiceStub(channels[0])
        await open_county(stubs, quota)
        race = Race(stubs, Slots(15 + ROUNDS * 3 // COUNSELORS))
        outcomes: dict[str, Counter[tuple[str, str]]] = {kind: Counter() for kind in KINDS}
        for n in range(ROUNDS):
            for kind, run in KINDS.items():
                answers = await run(race)
                outcomes[kind][answers] += 1
                for answer in answers:
                    assert "INTERNAL" not in answer and "UNKNOWN" not in answer, (kind, answers)
                # Both calls have answered: nothing is left half done.
                assert await under_way(engine) == [], (kind, n, answers)
                problems = await check(engine, engine)
                assert problems == [], (kind, n, answers, [str(p) for p in problems])
        print({kind: dict(counts) for kind, counts in outcomes.items()})
    finally:
        for channel in channels:
            await channel.close(None)
