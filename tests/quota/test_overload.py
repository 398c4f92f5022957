"""Overload: the quota service refuses at once the Reserves it could not
apply before their callers give up, instead of queueing every caller past
its deadline; Commits, which finish what a Reserve began, are never refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.quota.service import QuotaService
from services.runtime.server import start
from services.runtime.status import retry_delay
from tests.conftest import Backend, QuotaClient
from tests.county import RATE, account, reserve_request, seed

FLOOD = 600


@pytest.fixture
async def busy_quota(backend: Backend) -> AsyncIterator[QuotaClient]:
    """A quota service that lets a Reserve queue 20 ms at most, so that a
    flood on any machine goes over it."""
    service = QuotaService()
    server = await start([service], replace(backend.settings, quota_max_queue_seconds=0.02))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield QuotaClient(server, channel, quota_pb2_grpc.QuotaServiceStub(channel), service)
    finally:
        await channel.close()
        await server.stop(0.5)


async def test_a_flood_of_reserves_is_shed_at_once_and_its_commits_never_are(
    busy_quota: QuotaClient,
) -> None:
    stub = busy_quota.stub
    await seed(stub, budget=10_000_000, cap_minutes=100_000)
    await stub.Reserve(reserve_request("warm-up", employee="W"))  # the rate is measured

    outcomes = await asyncio.gather(
        *(
            stub.Reserve(reserve_request(f"k{i}", employee=f"E{i}"), timeout=30)
            for i in range(FLOOD)
        ),
        return_exceptions=True,
    )
    held = [o for o in outcomes if isinstance(o, pb.ReserveResponse)]
    shed = [i for i, o in enumerate(outcomes) if isinstance(o, grpc.aio.AioRpcError)]
    assert len(held) + len(shed) == FLOOD  # nothing else went wrong
    assert held, "the queue was served"
    assert shed, "a flood over 20 ms of work was not shed"
    for i in shed:
        error = outcomes[i]
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "busy" in (error.details() or "")
        delay = retry_delay(error)
        assert delay is not None and 0 < delay < 30

    # Every hold made in the flood is committed at once, all together.
    committed = await asyncio.gather(
        *(stub.Commit(pb.CommitRequest(hold_id=r.hold.hold_id)) for r in held)
    )
    assert {c.hold.state for c in committed} == {pb.HOLD_STATE_BOOKED}

    # A refused Reserve held nothing: what the agency has spent and holds is
    # exactly the flood's bookings and the warm-up's hold.
    agency = await stub.GetBalance(
        pb.GetBalanceRequest(account=account(pb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    )
    assert agency.balance.spent == len(held) * RATE
    assert agency.balance.held == RATE
    assert await busy_quota.service.reads.verify() == []

    # Retried once the flood has passed, a refused request is served.
    retried = await stub.Reserve(reserve_request(f"k{shed[0]}", employee=f"E{shed[0]}"))
    assert retried.hold.state == pb.HOLD_STATE_HELD
