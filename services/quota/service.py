"""The quota service as the runtime starts it: stores, migrations, sweeper."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from eap.quota.v1 import quota_pb2_grpc
from grpc import aio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quota.ledger import QuotaLedger
from services.quota.replay import ReplayCache
from services.quota.servicer import QuotaServicer
from services.runtime import database
from services.runtime.server import Runtime

log = logging.getLogger("eap.quota")

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_quota"


class QuotaService:
    name = "quota"
    full_name = "eap.quota.v1.QuotaService"
    migrations = MIGRATIONS
    version_table = VERSION_TABLE

    def __init__(self) -> None:
        self.engine: AsyncEngine | None = None
        self.ledger: QuotaLedger | None = None
        self.redis: Redis | None = None

    async def start(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.engine = database.create_engine(settings.database_url_for(self.name))
        await database.migrate(self.engine, self.migrations, self.version_table)
        self.ledger = QuotaLedger(self.engine, settings.hold_ttl_seconds)
        self.redis = runtime.redis
        runtime.spawn(self._sweep_forever(settings.hold_sweep_seconds), "quota-hold-sweeper")

    def register(self, server: aio.Server) -> None:
        assert self.ledger is not None
        quota_pb2_grpc.add_QuotaServiceServicer_to_server(
            QuotaServicer(self.ledger, ReplayCache(self.redis)), server
        )

    async def probe(self) -> dict[str, bool]:
        assert self.engine is not None
        return await database.probe_stores(self.engine, self.redis)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    async def _sweep_forever(self, every: float) -> None:
        """Gives back expired holds. Every replica sweeps; row locks with
        SKIP LOCKED keep them from treading on each other."""
        assert self.ledger is not None
        while True:
            await asyncio.sleep(every)
            try:
                while await self.ledger.expire_due() == 200:
                    pass
            except Exception:
                log.exception("hold sweep failed")
