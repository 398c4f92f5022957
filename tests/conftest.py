from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import redis

from eap.quota.v1 import quota_pb2_grpc
from services.quota.service import QuotaService
from services.runtime.config import Settings
from services.runtime.server import RunningServer, start
from tests import stores


@dataclass
class Backend:
    name: str
    settings: Settings


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The embedded default (SQLite, no Redis) and production (PostgreSQL + Redis)."""
    base = Settings(grpc_address="127.0.0.1:0", metrics_port=0, hold_sweep_seconds=0.2)
    if request.param == "sqlite":
        yield Backend("sqlite", replace(base, database_url=f"sqlite:///{tmp_path}/eap.db"))
        return
    with stores.fresh_postgres_database() as url:
        redis_url = stores.redis_url()
        redis.Redis.from_url(redis_url).flushdb()
        yield Backend("postgres", replace(base, database_url=url, redis_url=redis_url))


@dataclass
class QuotaClient:
    server: RunningServer
    channel: grpc.aio.Channel
    stub: quota_pb2_grpc.QuotaServiceStub
    service: QuotaService


@pytest.fixture
async def quota(backend: Backend) -> AsyncIterator[QuotaClient]:
    service = QuotaService()
    server = await start([service], backend.settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield QuotaClient(server, channel, quota_pb2_grpc.QuotaServiceStub(channel), service)
    finally:
        await channel.close()
        await server.stop(0.5)
