"""Where a Reserve+Commit pair's time goes, in one process, one call at a time.

Starts the quota service in-process (the same `start()` the tests use) on a
scratch PostgreSQL database + Redis, or on a SQLite file, and then:

1. traces one Reserve and one Commit after a warm-up: every SQL statement
   SQLAlchemy sends, and every write to the PostgreSQL and Redis sockets
   (one write is one request on the wire, so writes ~ round trips);
2. times N sequential pairs (wall and CPU per pair, client included) and
   N sequential no-op pairs (Ping + Ping) beside them;
3. runs cProfile over N more pairs and prints the top functions.

Usage:  .venv/bin/python bench/quota_profile.py [--backend postgres|sqlite] [--pairs 300]

It reads services/ and changes nothing there.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import io
import pstats
import sys
import time
from asyncio import selector_events
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import quota_bench as bench  # noqa: E402
from services.quota.service import QuotaService  # noqa: E402
from services.runtime.config import Settings  # noqa: E402
from services.runtime.server import start  # noqa: E402

PORTS = {5432: "postgres", 6379: "redis"}


class WireCounter:
    """Counts writes and reads on asyncio socket transports, by peer port."""

    def __init__(self) -> None:
        self.writes: collections.Counter[str] = collections.Counter()
        self.reads: collections.Counter[str] = collections.Counter()
        self.on = False
        transport = selector_events._SelectorSocketTransport
        original_write = transport.write
        original_read = transport._read_ready__data_received  # type: ignore[attr-defined]
        counter = self

        def peer(self: Any) -> str:
            name = self.get_extra_info("peername")
            port = name[1] if isinstance(name, tuple) and len(name) > 1 else None
            return PORTS.get(port, str(port))

        def write(self: Any, data: Any) -> None:
            if counter.on:
                counter.writes[peer(self)] += 1
            original_write(self, data)

        def read(self: Any) -> None:
            if counter.on:
                counter.reads[peer(self)] += 1
            original_read(self)

        transport.write = write  # type: ignore[method-assign]
        transport._read_ready__data_received = read  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.writes.clear()
        self.reads.clear()
        self.on = True
        try:
            yield
        finally:
            self.on = False


class SqlTrace:
    def __init__(self, service: QuotaService) -> None:
        assert service.engine is not None
        self.statements: list[str] = []
        self.on = False
        engine = service.engine.sync_engine

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if self.on:
                self.statements.append(" ".join(statement.split()))

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if self.on:
                self.statements.append("BEGIN (driver)")

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            if self.on:
                self.statements.append("COMMIT (driver)")

    @contextlib.contextmanager
    def tracing(self) -> Iterator[list[str]]:
        self.statements = []
        self.on = True
        try:
            yield self.statements
        finally:
            self.on = False


class Pairs:
    def __init__(self, stub: quota_pb2_grpc.QuotaServiceStub) -> None:
        self.stub = stub
        self.n = 0
        self.starts = bench._session_starts()

    def reserve_request(self) -> pb.ReserveRequest:
        n = self.n
        self.n += 1
        return pb.ReserveRequest(
            idempotency_key=f"prof-{n}",
            employee_id=f"P-{n // bench.WEEKS}",
            agency_id="BA0",
            staff_category=bench.CATEGORY,
            provider_id="BP0",
            session_start=self.starts[n % bench.WEEKS],
            minutes=bench.SESSION_MINUTES,
        )

    async def rc(self) -> None:
        reserved = await self.stub.Reserve(self.reserve_request())
        await self.stub.Commit(pb.CommitRequest(hold_id=reserved.hold.hold_id))

    async def noop(self) -> None:
        await self.stub.Ping(pb.PingRequest())
        await self.stub.Ping(pb.PingRequest())


async def _timed(label: str, pair: Any, count: int) -> float:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await pair()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{label:>5}: {count} sequential pairs, {1000 * wall / count:.2f} ms wall and "
        f"{1000 * cpu / count:.2f} ms CPU per pair (client and server in this process)"
    )
    return cpu / count


async def profile(backend: str, database_url: str, pairs: int, top: int) -> None:
    wire = WireCounter()
    settings = Settings(
        grpc_address="127.0.0.1:0",
        metrics_port=-1,
        database_url=database_url,
        redis_url=bench.REDIS_URL if backend == "postgres" else None,
        log_level="WARNING",
    )
    service = QuotaService()
    server = await start([service], replace(settings))
    target = f"127.0.0.1:{server.port}"
    await asyncio.get_running_loop().run_in_executor(
        None, bench.seed, target, ["BA0"], ["BP0"], "prof"
    )
    trace = SqlTrace(service)
    channel = grpc.aio.insecure_channel(target)
    stub = quota_pb2_grpc.QuotaServiceStub(channel)
    runner = Pairs(stub)
    try:
        for _ in range(100):  # warm caches: compiled SQL, prepared statements, pool
            await runner.rc()
        print(f"== {backend}: one Reserve and one Commit after a warm-up of 100 pairs")
        for name in ("Reserve", "Commit"):
            with wire.counting(), trace.tracing() as statements:
                if name == "Reserve":
                    reserved = await stub.Reserve(runner.reserve_request())
                else:
                    await stub.Commit(pb.CommitRequest(hold_id=reserved.hold.hold_id))
            print(
                f"-- {name}: {len(statements)} SQL statements (SQLAlchemy); socket writes "
                f"{dict(wire.writes)}, reads {dict(wire.reads)}"
            )
            for statement in statements:
                print(f"   {statement[:160]}")
        print()
        noop_cpu = await _timed("no-op", runner.noop, pairs)
        rc_cpu = await _timed("R+C", runner.rc, pairs)
        print(f"R+C costs {1000 * (rc_cpu - noop_cpu):.2f} ms CPU per pair more than a no-op pair")
        print()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(pairs):
            await runner.rc()
        profiler.disable()
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order)
            stats.print_stats(top)
            print(f"== cProfile of {pairs} R+C pairs, by {order} (per-pair: divide by {pairs})")
            print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:20000])
    finally:
        await channel.close()
        await server.stop(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    store = bench.postgres_database() if args.backend == "postgres" else bench.sqlite_database()
    with store as url:
        if args.backend == "postgres":
            bench._flush_redis()
        asyncio.run(profile(args.backend, url, args.pairs, args.top))
        if args.backend == "postgres":
            bench._flush_redis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
