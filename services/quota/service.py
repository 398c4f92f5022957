"""The quota service as the runtime starts it: stores, migrations, sweeper."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from grpc import aio

from eap.quota.v1 import quota_pb2_grpc
from services.quota import metrics
from services.quota.funding import Funding
from services.quota.ledger import QuotaLedger
from services.quota.ledger_reads import LedgerReads
from services.quota.servicer import QuotaServicer
from services.rules.office_time import fiscal_year_of
from services.runtime import clock, lease
from services.runtime.server import Runtime
from services.runtime.service_base import DatabaseService

log = logging.getLogger("eap.quota")

SWEEP_BATCH = 200
METRICS_SECONDS = 10.0  # how often the balance gauges are read from the database


class QuotaService(DatabaseService):
    name = "quota"
    full_name = "eap.quota.v1.QuotaService"
    migrations = Path(__file__).parent / "migrations"
    version_table = "alembic_version_quota"
    uses_redis = True
    audited = True
    # A Commit books what a Reserve held; a Release gives it back.
    finishing_methods = frozenset({"Commit", "Release"})

    async def started(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.ledger = QuotaLedger(
            self.engine, settings.hold_ttl_seconds, settings.quota_max_queue_seconds
        )
        self.funding = Funding(self.engine, self.ledger.reference)
        self.reads = LedgerReads(self.engine, self.audit, self.tenant)
        runtime.spawn(
            self._sweep_forever(runtime.settings.hold_sweep_seconds), "quota-hold-sweeper"
        )
        runtime.spawn(self._metrics_forever(), "quota-metrics")
        if settings.consistency_seconds > 0:
            runtime.spawn(self._check_forever(settings.consistency_seconds), "quota-ledger-check")

    async def close(self) -> None:
        await self.ledger.close()
        await super().close()

    def servicer(self) -> object:
        return QuotaServicer(self.ledger, self.funding, self.reads)

    def add_to_server(self, servicer: object, server: aio.Server) -> None:
        quota_pb2_grpc.add_QuotaServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]

    async def _sweep_forever(self, every: float) -> None:
        """Gives back expired holds. One replica at a time holds the sweep
        lease in Redis; without Redis every replica sweeps, and SKIP LOCKED
        keeps them from treading on each other."""
        while True:
            await asyncio.sleep(every)
            if not await lease.take_turn(
                self.redis, self.name, "hold-sweep", every * 3, self.lease_scope
            ):
                continue
            try:
                while await self.ledger.expire_due(SWEEP_BATCH) == SWEEP_BATCH:
                    pass
            except Exception:
                log.exception("hold sweep failed")

    async def _check_forever(self, every: float) -> None:
        """The ledger's own check (every balance its ledger's sum, none
        below zero) every `every` seconds, by one replica at a time."""
        while True:
            await asyncio.sleep(every)
            if not await lease.take_turn(
                self.redis, self.name, "ledger-check", every * 2, self.lease_scope
            ):
                continue
            try:
                problems = await self.reads.verify()
            except Exception:  # a store is down: the health probe reports it
                log.warning("ledger check failed", exc_info=True)
                continue
            metrics.LEDGER_PROBLEMS.labels(self.tenant).set(len(problems))
            metrics.LEDGER_CHECKED.labels(self.tenant).set(time.time())
            if problems:
                # Account subjects and totals only (agencies, providers, pseudonymous ids).
                log.error("ledger disagrees with balances", extra={"count": len(problems)})

    async def _metrics_forever(self) -> None:
        """Keeps the balance gauges of the current fiscal year fresh."""
        while True:
            try:
                await self.reads.refresh_metrics(fiscal_year_of(clock.now()))
            except Exception:  # a store is down: the health probe reports it
                log.warning("quota metrics refresh failed", exc_info=True)
            await asyncio.sleep(METRICS_SECONDS)
