"""Chaos benchmark: open-loop Reserve+Commit at twice the quota target rate,
with one of several quota replicas killed (SIGKILL) midway.

Acceptance line 7 of issue 6: such a load test loses no committed booking and
leaves no hold unreleased after the TTL.

The quota benchmark's target (issue 2) is R+C pairs/s >= half the no-op pairs/s
of the same run, so twice the target is 2 x 0.5 x no-op = the no-op pair rate.
This bench:

1. creates a fresh PostgreSQL database, runs `eapctl migrate`, and starts
   N `eapctl serve quota` replicas on it and one Redis (dev auth, no rate
   limit, a short hold sweep), and seeds a county as the quota bench does
   (budgets, caps and entitlement far above what the run can use);
2. measures the no-op pair rate with the quota bench's own cell (64 clients,
   Ping + Ping, closed loop) against one replica, and sets the offered rate
   to `--factor` (2) x 0.5 x that rate;
3. runs client processes that start Reserve->Commit pairs at that fixed
   arrival rate (open loop: a pair starts on schedule whether or not earlier
   ones finished), spread round-robin over the replicas; every Reserve is a
   distinct employee-week. A call that fails with UNAVAILABLE is retried on
   another replica, with the same idempotency key for Reserve (and the same
   hold id for Commit, which is idempotent); any other failure ends the pair
   and is counted by RPC and status code. Every hold whose Commit answered OK
   (state BOOKED) is recorded;
4. SIGKILLs one replica midway (the one holding the hold-sweep lease, if any);
5. when the load is over, waits until the survivors stop writing (their
   queues drained), then until every hold's TTL has passed plus the sweep
   lease's turn, and checks in PostgreSQL directly: (a) every hold a client
   saw committed is booked, (b) no hold is still held and no account holds
   anything, (c) `eapctl quota verify` passes, (d) the booked holds' amounts
   and minutes equal the agencies' and providers' spent totals.

Usage:  .venv/bin/python bench/chaos_bench.py [--replicas 3] [--duration 50] [--no-write]
Writes its section of bench/RESULTS.md (between chaos-bench markers) unless
--no-write is given; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import psycopg
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from quota_bench import (
    CATEGORY,
    REDIS_URL,
    SESSION_MINUTES,
    WEEKS,
    YEAR,
    _free_port,
    _machine_ticks,
    _percentile,
    _proc_cpu,
    _session_starts,
    _wait_ready,
    machine_info,
    postgres_database,
    run_cell,
    seed,
    wait_for_quiet,
)
from results import RESULTS, ROOT, header, marks, write_section

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc

START_MARK, END_MARK = marks("chaos-bench")
EAPCTL = str(Path(sys.executable).with_name("eapctl"))
NOOP_CLIENTS = 64  # the quota target's row
DOWN_SECONDS = 1.0  # a replica that answered UNAVAILABLE is skipped this long


# -- client processes -----------------------------------------------------------


@dataclass
class LoadSpec:
    targets: list[str]
    rate: float  # pairs/s offered by this process
    proc: int
    procs: int
    t0: float  # time.monotonic() of the load's start (the same clock in every process)
    duration: float
    tag: str
    agencies: list[str]
    providers: list[str]
    ttl_seconds: int
    call_timeout: float
    attempts: int


@dataclass
class LoadResult:
    # (hold_id, amount_ntd, minutes) of every pair whose Commit answered BOOKED
    committed: list[tuple[str, int, int]] = field(default_factory=list)
    # per finished pair: (completed at, s after t0; "OK" or "<RPC> <code>")
    finished: list[tuple[float, str]] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)  # OK pairs: scheduled start -> BOOKED
    service: list[float] = field(default_factory=list)  # OK pairs: first send -> BOOKED
    lag: list[float] = field(default_factory=list)  # every pair: first send - scheduled start
    attempts: Counter[str] = field(default_factory=Counter)  # "<RPC> <code>" per call made
    retried: Counter[str] = field(default_factory=Counter)  # pairs' RPCs retried, by outcome
    samples: dict[str, str] = field(default_factory=dict)  # a detail text per outcome
    sent: int = 0
    cpu_seconds: float = 0.0
    proc: int = 0


def _outcome(method: str, error: grpc.aio.AioRpcError) -> str:
    """`<RPC> <code>`, with the rule for a FAILED_PRECONDITION."""
    text = f"{method} {error.code().name}"
    if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
        with contextlib.suppress(Exception):
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            for detail in status.details if status else ():
                info = error_details_pb2.ErrorInfo()
                if detail.Is(info.DESCRIPTOR):
                    detail.Unpack(info)
                    text += f" ({info.reason})"
    return text


class Replicas:
    """Round-robin over the replicas' channels, skipping for a moment one
    that just answered UNAVAILABLE."""

    def __init__(self, targets: list[str]) -> None:
        self.channels = [grpc.aio.insecure_channel(t) for t in targets]
        self.stubs = [quota_pb2_grpc.QuotaServiceStub(c) for c in self.channels]
        self.down_until = [0.0] * len(targets)

    def pick(self, after: int) -> int:
        """The first replica from `after` on that is not marked down."""
        now = time.monotonic()
        n = len(self.stubs)
        for step in range(n):
            index = (after + step) % n
            if self.down_until[index] <= now:
                return index
        return after % n

    async def call(
        self, method: str, request: object, first: int, spec: LoadSpec, result: LoadResult
    ) -> object:
        """The answer, or the last error (after retries on UNAVAILABLE, each on
        the next replica up)."""
        index = self.pick(first)
        for attempt in range(1, spec.attempts + 1):
            try:
                answer = await getattr(self.stubs[index], method)(
                    request, timeout=spec.call_timeout
                )
                result.attempts[f"{method} OK"] += 1
                if attempt > 1:
                    result.retried[f"{method} then OK"] += 1
                return answer
            except grpc.aio.AioRpcError as error:
                outcome = _outcome(method, error)
                result.attempts[outcome] += 1
                result.samples.setdefault(outcome, str(error.details())[:200])
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == spec.attempts:
                    if attempt > 1:
                        result.retried[f"{method} then {error.code().name}"] += 1
                    return error
                self.down_until[index] = time.monotonic() + DOWN_SECONDS
                await asyncio.sleep(0.01 * attempt)
                index = self.pick(index + 1)
        raise AssertionError("unreachable")


async def _pair(
    replicas: Replicas,
    spec: LoadSpec,
    n: int,
    scheduled: float,
    request: pb.ReserveRequest,
    result: LoadResult,
) -> None:
    sent = time.monotonic()
    result.lag.append(sent - scheduled)
    first = n * spec.procs + spec.proc  # round-robin over all pairs of all processes
    reserved = await replicas.call("Reserve", request, first, spec, result)
    if isinstance(reserved, grpc.aio.AioRpcError):
        result.finished.append((time.monotonic() - spec.t0, _outcome("Reserve", reserved)))
        return
    assert isinstance(reserved, pb.ReserveResponse)
    commit = pb.CommitRequest(hold_id=reserved.hold.hold_id)
    committed = await replicas.call("Commit", commit, first + 1, spec, result)
    done = time.monotonic()
    if isinstance(committed, grpc.aio.AioRpcError):
        result.finished.append((done - spec.t0, _outcome("Commit", committed)))
        return
    assert isinstance(committed, pb.CommitResponse)
    if committed.hold.state != pb.HOLD_STATE_BOOKED:
        result.finished.append((done - spec.t0, f"Commit OK in state {committed.hold.state}"))
        return
    hold = committed.hold
    result.committed.append((hold.hold_id, hold.amount_ntd, hold.minutes))
    result.finished.append((done - spec.t0, "OK"))
    result.latency.append(done - scheduled)
    result.service.append(done - sent)


async def _load(conn: Connection, spec: LoadSpec) -> None:
    replicas = Replicas(spec.targets)
    try:
        for stub in replicas.stubs:
            await stub.Ping(pb.PingRequest(), timeout=10)
        conn.send("ready")
        starts = _session_starts()
        result = LoadResult(proc=spec.proc)
        await asyncio.sleep(max(0.0, spec.t0 - time.monotonic()))
        cpu = time.process_time()
        period = 1.0 / spec.rate
        offset = spec.proc / (spec.rate * spec.procs)  # the processes take turns
        end = spec.t0 + spec.duration
        running: set[asyncio.Task[None]] = set()
        n = 0
        while True:
            scheduled = spec.t0 + offset + n * period
            if scheduled >= end:
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            g = n * spec.procs + spec.proc  # this pair's number over all processes
            request = pb.ReserveRequest(
                idempotency_key=f"{spec.tag}-{spec.proc}-{n}",
                employee_id=f"K{spec.tag}-{spec.proc}-{n // WEEKS}",
                agency_id=spec.agencies[g % len(spec.agencies)],
                staff_category=CATEGORY,
                provider_id=spec.providers[(g + g // len(spec.agencies)) % len(spec.providers)],
                session_start=starts[n % WEEKS],
                minutes=SESSION_MINUTES,
                hold_ttl_seconds=spec.ttl_seconds,
            )
            task = asyncio.ensure_future(_pair(replicas, spec, n, scheduled, request, result))
            running.add(task)
            task.add_done_callback(running.discard)
            n += 1
        result.sent = n
        if running:
            await asyncio.gather(*running)
        result.cpu_seconds = time.process_time() - cpu
        conn.send(result)
    finally:
        for channel in replicas.channels:
            await channel.close()


def _load_entry(conn: Connection, spec: LoadSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up
    try:
        asyncio.run(_load(conn, spec))
    except BaseException as error:
        with contextlib.suppress(Exception):
            conn.send(f"client failed: {type(error).__name__}: {error}")
        raise


# -- the replicas ---------------------------------------------------------------


@dataclass
class Replica:
    address: str
    process: subprocess.Popen[bytes]
    log: Path


def _env(database_url: str, sweep_seconds: float, max_calls: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EAP_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        EAP_METRICS_PORT="-1",
        EAP_AUTH_MODE="dev",
        EAP_LOG_LEVEL="INFO",
        EAP_HOLD_SWEEP_SECONDS=str(sweep_seconds),
        EAP_SHUTDOWN_GRACE_SECONDS="2",
        EAP_MAX_CONCURRENT_RPCS=str(max_calls),
    )
    return env


@contextlib.contextmanager
def replica_set(
    database_url: str, count: int, sweep_seconds: float, max_calls: int, logs: Path
) -> Iterator[list[Replica]]:
    env = _env(database_url, sweep_seconds, max_calls)
    migrated = subprocess.run(
        [EAPCTL, "migrate"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"eapctl migrate failed:\n{migrated.stderr[-3000:]}")
    started: list[Replica] = []
    try:
        for n in range(count):
            address = f"127.0.0.1:{_free_port()}"
            log = logs / f"replica-{n}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [EAPCTL, "serve", "quota"],
                    env={**env, "EAP_GRPC_ADDRESS": address},
                    cwd=ROOT,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            started.append(Replica(address, process, log))
        for replica in started:
            _wait_ready(replica.address, replica.process, replica.log)
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.process.wait(20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


def _cpu_outside(ours: set[int]) -> dict[int, float]:
    """CPU seconds of every process that is not the bench's (`ours`), nor
    PostgreSQL or Redis: other work on the machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith(("postgres", "redis")):
            continue
        cpu = _proc_cpu(int(entry))
        if cpu is not None:
            found[int(entry)] = cpu
    return found


def _lease_holder(database_url: str) -> str | None:
    """Who holds the hold-sweep lease now: `host:pid`, or None."""
    import redis

    from services.runtime.database import scope_of

    key = f"eap:quota:lease:hold-sweep:{scope_of(database_url)}"
    with contextlib.suppress(Exception):
        value = redis.Redis.from_url(REDIS_URL).get(key)
        return value.decode() if isinstance(value, bytes) else None
    return None


def _victim(replicas: list[Replica], database_url: str) -> tuple[int, bool]:
    """The replica to kill: the sweep lease's holder if there is one alive."""
    holder = _lease_holder(database_url)
    for index, replica in enumerate(replicas):
        if holder == f"{socket.gethostname()}:{replica.process.pid}":
            return index, True
    return len(replicas) - 1, False


# -- after the load ---------------------------------------------------------------


def _query(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql, args).fetchall()  # type: ignore[arg-type]


def _slack(args: argparse.Namespace) -> float:
    """After a hold's TTL: the sweep lease's turn (3 sweeps) if its holder
    died, a sweep, and 2 s."""
    return float(3 * args.sweep_seconds + args.sweep_seconds + 2.0)


def wait_quiet_writes(url: str, limit: float) -> float:
    """Seconds until nothing but the sweeper writes: no new hold and no new
    ledger entry other than an expiry for 2 s. (A request whose caller gave
    up may still be queued in a replica and applied later.)"""
    began = time.monotonic()
    sql = (
        "SELECT (SELECT count(*) FROM quota_holds), "
        "(SELECT count(*) FROM quota_ledger WHERE kind <> 'EXPIRE')"
    )
    last = _query(url, sql)[0]
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 2.0:
        if time.monotonic() - began > limit:
            raise RuntimeError(f"the replicas were still writing {limit:.0f} s after the load")
        time.sleep(0.25)
        now = _query(url, sql)[0]
        if now != last:
            last, stable_since = now, time.monotonic()
    return time.monotonic() - began - 2.0


def wait_past_ttl(url: str, slack: float) -> float:
    """Sleeps until the last hold's expiry is `slack` seconds in the past
    (by the database's clock); returns how long that was."""
    row = _query(url, "SELECT EXTRACT(EPOCH FROM max(expires_at) - now()) FROM quota_holds")[0]
    wait = max(0.0, float(row[0] or 0.0) + slack)
    time.sleep(wait)
    return wait


@dataclass
class Checks:
    committed_seen: int = 0
    committed_booked: int = 0
    lost: list[tuple[str, str]] = field(default_factory=list)  # (hold id, its state or missing)
    states: dict[str, int] = field(default_factory=dict)
    accounts_held: int = 0
    verify_exit: int = -1
    verify_text: str = ""
    booked_ntd: int = 0
    agencies_spent: int = 0
    booked_minutes: int = 0
    providers_spent: int = 0
    expired_entries: int = 0
    # per hold the load made: when a replica applied its Reserve, s after the pair's
    # scheduled start
    apply_delay: list[float] = field(default_factory=list)
    made_after_load: int = 0  # holds made after every pair was over
    last_made_after_load: float = 0.0  # s after
    held_made_after_load: int = 0  # of the holds still held at the check
    drain_seconds: float | None = None  # diagnosis when (b) fails
    held_at_recheck: int | None = None

    @property
    def a(self) -> bool:
        return not self.lost and self.committed_booked == self.committed_seen

    @property
    def b(self) -> bool:
        return self.states.get("held", 0) == 0 and self.accounts_held == 0

    @property
    def c(self) -> bool:
        return self.verify_exit == 0

    @property
    def d(self) -> bool:
        return (self.booked_ntd, self.booked_minutes) == (self.agencies_spent, self.providers_spent)

    @property
    def passed(self) -> bool:
        return self.a and self.b and self.c and self.d


def check(
    url: str,
    committed: list[tuple[str, int, int]],
    tag: str,
    scheduled: dict[str, float],
    done: float,
) -> Checks:
    """The four checks; `scheduled` maps an idempotency key to its pair's
    scheduled start, `done` is when every pair was over (Unix times)."""
    result = Checks(committed_seen=len(committed))
    late = _query(
        url,
        "SELECT count(*), coalesce(EXTRACT(EPOCH FROM max(created_at)), 0), "
        "count(*) FILTER (WHERE state = 'held') FROM quota_holds "
        "WHERE created_at > to_timestamp(%s)",
        done,
    )[0]
    result.made_after_load = int(str(late[0]))
    result.last_made_after_load = max(0.0, float(str(late[1])) - done)
    result.held_made_after_load = int(str(late[2]))
    made = _query(
        url,
        "SELECT idempotency_key, EXTRACT(EPOCH FROM created_at) FROM quota_holds "
        "WHERE idempotency_key LIKE %s",
        f"{tag}-%",
    )
    result.apply_delay = [
        float(str(at)) - scheduled[str(key)] for key, at in made if str(key) in scheduled
    ]
    ids = [hold_id for hold_id, _, _ in committed]
    states = dict(
        _query(url, "SELECT hold_id, state FROM quota_holds WHERE hold_id = ANY(%s)", ids)
    )
    for hold_id in ids:
        state = str(states.get(hold_id, "missing"))
        if state == "booked":
            result.committed_booked += 1
        else:
            result.lost.append((hold_id, state))
    result.states = {
        str(state): int(str(count))
        for state, count in _query(url, "SELECT state, count(*) FROM quota_holds GROUP BY state")
    }
    booked = _query(
        url,
        "SELECT coalesce(sum(amount_ntd), 0), coalesce(sum(minutes), 0) FROM quota_holds "
        "WHERE state = 'booked'",
    )[0]
    result.booked_ntd, result.booked_minutes = int(str(booked[0])), int(str(booked[1]))
    spent = dict(
        _query(
            url,
            "SELECT kind, coalesce(sum(spent), 0) FROM quota_accounts WHERE fiscal_year = %s "
            "GROUP BY kind",
            YEAR,
        )
    )
    result.agencies_spent = int(str(spent.get("agency", 0)))
    result.providers_spent = int(str(spent.get("provider", 0)))
    result.accounts_held = int(
        str(_query(url, "SELECT coalesce(sum(held), 0) FROM quota_accounts")[0][0])
    )
    result.expired_entries = int(
        str(
            _query(url, "SELECT count(DISTINCT reference) FROM quota_ledger WHERE kind = 'EXPIRE'")[
                0
            ][0]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EAP_")}
    env.update(DATABASE_URL=url, EAP_LOG_LEVEL="WARNING")
    done = subprocess.run(
        [EAPCTL, "quota", "verify"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    result.verify_exit, result.verify_text = done.returncode, lines[-1] if lines else ""
    return result


# -- one run ----------------------------------------------------------------------


@dataclass
class Run:
    replicas: int
    procs: int
    noop_pairs_per_s: float
    noop_busy_before: float
    noop_other_cores: float
    offered: float
    duration: float
    kill_at: float  # s after the load's start
    killed: int
    killed_held_lease: bool
    results: list[LoadResult]
    machine_busy: float
    replica_cores: float
    other_cores: float  # processes outside the bench, PostgreSQL and Redis, during the load
    noop_disturbed: bool
    client_cores: float
    checks: Checks
    server_errors: list[str]

    @property
    def finished(self) -> list[tuple[float, str]]:
        return [f for r in self.results for f in r.finished]

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for at, outcome in self.finished if outcome == "OK" and start <= at < end)


def run_chaos(args: argparse.Namespace, logs: Path) -> Run:
    agencies = [f"CA{i}" for i in range(args.agencies)]
    providers = [f"CP{i}" for i in range(args.providers)]
    tag = uuid.uuid4().hex[:6]
    with (
        postgres_database() as url,
        replica_set(
            url, args.replicas, args.sweep_seconds, args.max_concurrent_rpcs, logs
        ) as replicas,
    ):
        targets = [r.address for r in replicas]
        seed(targets[0], agencies, providers, tag)

        # -- the no-op pair rate, with the quota bench's own cell ---------------
        for attempt in range(args.retries + 1):
            noop = run_cell(
                targets[0],
                replicas[0].process.pid,
                "noop",
                NOOP_CLIENTS,
                args.noop_procs,
                f"{tag}n{attempt}",
                agencies,
                providers,
                1.0,
                args.noop_duration,
                None,
                url.rsplit("/", 1)[1],
                args.quiet_wait,
            )
            if not noop.disturbed:
                break
            print(
                f"other work took {noop.other_cores:.2f} cores during the no-op cell"
                + ("; running it again" if attempt < args.retries else ""),
                flush=True,
            )
        offered = args.rate or args.factor * 0.5 * noop.pairs_per_s
        print(
            f"no-op: {noop.pairs_per_s:,.0f} pairs/s at {NOOP_CLIENTS} clients "
            f"(p50 {noop.p50_ms:.1f} ms); offering {offered:,.0f} R+C pairs/s",
            flush=True,
        )

        # -- the load, and the kill midway ------------------------------------
        wait_for_quiet(args.quiet_wait)
        ctx = mp.get_context("spawn")
        t0 = time.monotonic() + 3.0  # time for the processes to start
        t0_wall = time.time() + (t0 - time.monotonic())
        workers = []
        for proc in range(args.procs):
            parent_end, child_end = ctx.Pipe()
            spec = LoadSpec(
                targets,
                offered / args.procs,
                proc,
                args.procs,
                t0,
                args.duration,
                tag,
                agencies,
                providers,
                args.ttl,
                args.call_timeout,
                args.attempts,
            )
            process = ctx.Process(target=_load_entry, args=(child_end, spec), daemon=True)
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        try:
            for _, conn in workers:
                if not conn.poll(30):
                    raise RuntimeError("a client process did not start within 30 s")
                if (message := conn.recv()) != "ready":
                    raise RuntimeError(str(message))
            if time.monotonic() > t0:
                raise RuntimeError("the client processes started too late")
            time.sleep(t0 - time.monotonic())
            ticks0 = _machine_ticks()
            ours = {os.getpid(), *(r.process.pid for r in replicas)}
            ours |= {p.pid for p, _ in workers if p.pid is not None}
            other0 = _cpu_outside(ours)
            cpu0 = [_proc_cpu(r.process.pid) or 0.0 for r in replicas]
            kill_at = args.duration * args.kill_at
            time.sleep(max(0.0, t0 + kill_at - time.monotonic()))
            killed, held_lease = _victim(replicas, url)
            cpu_killed = _proc_cpu(replicas[killed].process.pid) or 0.0
            os.kill(replicas[killed].process.pid, signal.SIGKILL)
            kill_at = time.monotonic() - t0
            replicas[killed].process.wait(10)
            print(
                f"killed replica {killed} (pid {replicas[killed].process.pid}, "
                f"{'held' if held_lease else 'did not hold'} the sweep lease) "
                f"at {kill_at:.1f} s",
                flush=True,
            )
            time.sleep(max(0.0, t0 + args.duration - time.monotonic()))
            ticks1 = _machine_ticks()
            other1 = _cpu_outside(ours)
            cpu1 = [
                cpu_killed if n == killed else (_proc_cpu(r.process.pid) or 0.0)
                for n, r in enumerate(replicas)
            ]
            results: list[LoadResult] = []
            limit = args.attempts * args.call_timeout * 2 + 30
            for _, conn in workers:
                if not conn.poll(limit):
                    raise RuntimeError("a client process did not report")
                message = conn.recv()
                if not isinstance(message, LoadResult):
                    raise RuntimeError(str(message))
                results.append(message)
            for process, _ in workers:
                process.join(30)
        finally:
            for process, conn in workers:
                conn.close()
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        # Every pair is over: answered, or given up by its client.
        done_wall = time.time()
        print(f"load over; waiting {args.ttl + _slack(args):g} s (TTL + sweep)", flush=True)

        # -- the TTL plus the sweep later: the checks ----------------------------
        time.sleep(args.ttl + _slack(args))
        scheduled = {
            f"{tag}-{r.proc}-{n}": t0_wall + r.proc / offered + n * args.procs / offered
            for r in results
            for n in range(r.sent)
        }
        checks = check(url, [c for r in results for c in r.committed], tag, scheduled, done_wall)
        if not checks.b:
            # Stuck, or made late? Once nothing is written any more and every
            # hold's own TTL has passed, look again (a diagnosis, not a check).
            checks.drain_seconds = wait_quiet_writes(url, args.drain_limit)
            wait_past_ttl(url, _slack(args))
            checks.held_at_recheck = int(
                str(_query(url, "SELECT count(*) FROM quota_holds WHERE state = 'held'")[0][0])
            )
        errors = [
            line
            for r in replicas
            for line in r.log.read_text().splitlines()
            if '"level": "error"' in line
        ]
    busy = ticks1[0] - ticks0[0]
    total = ticks1[1] - ticks0[1]
    return Run(
        replicas=args.replicas,
        procs=args.procs,
        noop_pairs_per_s=noop.pairs_per_s,
        noop_busy_before=noop.busy_before,
        noop_other_cores=noop.other_cores,
        offered=offered,
        duration=args.duration,
        kill_at=kill_at,
        killed=killed,
        killed_held_lease=held_lease,
        results=results,
        machine_busy=busy / total if total else math.nan,
        replica_cores=sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / args.duration,
        other_cores=sum(cpu - other0.get(pid, 0.0) for pid, cpu in other1.items()) / args.duration,
        noop_disturbed=noop.disturbed,
        client_cores=sum(r.cpu_seconds for r in results) / args.duration,
        checks=checks,
        server_errors=errors,
    )


# -- the report -------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * _percentile(sorted(values), q):,.0f}" if values else "-"


def render(run: Run, args: argparse.Namespace, info: dict[str, str], started: str) -> str:
    sent = sum(r.sent for r in run.results)
    finished = run.finished
    outcomes = Counter(outcome for _, outcome in finished)
    ok = outcomes.get("OK", 0)
    attempts: Counter[str] = Counter()
    retried: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for r in run.results:
        attempts.update(r.attempts)
        retried.update(r.retried)
        for key, text in r.samples.items():
            samples.setdefault(key, text)
    latency = [x for r in run.results for x in r.latency]
    service = [x for r in run.results for x in r.service]
    lag = [x for r in run.results for x in r.lag]
    before = run.ok_between(0, run.kill_at)
    after = run.ok_between(run.kill_at, run.duration)
    drained = sum(1 for at, o in finished if o == "OK" and at >= run.duration)
    c = run.checks
    command = ".venv/bin/python bench/chaos_bench.py" + (
        f" {' '.join(args.argv)}" if args.argv else ""
    )
    out = [
        START_MARK,
        *header(
            "Quota under chaos: twice the target rate, one replica SIGKILLed",
            command,
            "bench-chaos",
            started,
            f"; grpcio {info['grpcio']}",
        )[:-1],
        f"- PostgreSQL {info.get('postgres', 'unknown')} "
        f"({info.get('postgres_settings', '')}); Redis {info.get('redis', 'unknown')}",
        "",
        "Acceptance line 7 of issue 6: a load test at twice the quota benchmark's target "
        "rate with one replica killed midway (SIGKILL) loses no committed booking and leaves "
        "no hold unreleased after the TTL.",
        "",
        f"Method: {run.replicas} `eapctl serve quota` replicas on one fresh PostgreSQL "
        f"database and one Redis (EAP_AUTH_MODE=dev, no rate limit, "
        f"EAP_MAX_CONCURRENT_RPCS={args.max_concurrent_rpcs} as deployed, "
        f"EAP_HOLD_SWEEP_SECONDS={args.sweep_seconds:g}, so the sweep lease lasts "
        f"{3 * args.sweep_seconds:g} s), seeded as in the quota bench ({args.agencies} "
        f"agencies, {args.providers} providers, limits far above the run's use). "
        f"**Offered rate**: the quota target is R+C pairs/s >= 0.5 x no-op pairs/s at "
        f"{NOOP_CLIENTS} clients; this run measured no-op with the quota bench's own cell "
        f"({NOOP_CLIENTS} closed-loop clients in {args.noop_procs} processes, Ping + Ping, "
        f"1 s warm-up + {args.noop_duration:g} s, against replica 0): "
        f"**{run.noop_pairs_per_s:,.0f} no-op pairs/s**, so the target rate is "
        f"{0.5 * run.noop_pairs_per_s:,.0f} R+C pairs/s and {args.factor:g} x that is "
        f"**{run.offered:,.0f} R+C pairs/s offered**"
        + (f" (overridden by --rate {args.rate:g})" if args.rate else "")
        + f". Open loop: {run.procs} client processes start pairs on a fixed schedule "
        f"({run.offered / run.procs:,.0f}/s each, whether or not earlier pairs finished) for "
        f"{run.duration:g} s; a pair is Reserve (a distinct employee-week, hold TTL "
        f"{args.ttl} s) then Commit of its hold, each call with a {args.call_timeout:g} s "
        "deadline, spread round-robin over the replicas. A call answered UNAVAILABLE is "
        f"retried (up to {args.attempts} tries) on another replica with the same "
        "idempotency key (Reserve) or hold id (Commit); every other failure ends the pair. "
        f"At {run.kill_at:.1f} s the bench SIGKILLed replica {run.killed} "
        + (
            "(it held the hold-sweep lease at that moment)"
            if run.killed_held_lease
            else "(no replica held the sweep lease at that moment)"
        )
        + ". When every pair was over (answered, or given up by its client), the bench "
        f"waited the TTL plus {_slack(args):g} s (the sweep lease's turn, "
        f"{3 * args.sweep_seconds:g} s, should its holder have died; a sweep; 2 s) and "
        "checked PostgreSQL directly. Other work = CPU of the processes that are neither "
        "the bench's, PostgreSQL nor Redis (another test run, say), during the load.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| offered (derived: {args.factor:g} x 0.5 x {run.noop_pairs_per_s:,.0f} no-op "
        f"pairs/s) | {run.offered:,.0f} pairs/s |",
        f"| pairs started | {sent:,} ({sent / run.duration:,.0f}/s; start lag behind the "
        f"schedule p50 {_ms(lag, 0.5)} ms, p99 {_ms(lag, 0.99)} ms) |",
        f"| pairs OK (Commit answered BOOKED) | {ok:,} ({ok / max(1, sent):.1%} of started) |",
        f"| achieved before the kill (0-{run.kill_at:.1f} s) | "
        f"{before / run.kill_at:,.0f} pairs/s |",
        f"| achieved after the kill ({run.kill_at:.1f}-{run.duration:g} s) | "
        f"{after / (run.duration - run.kill_at):,.0f} pairs/s |",
        f"| OK pairs finished after the schedule ended | {drained:,} |",
        f"| OK pair latency, from its scheduled start, p50 / p99 | {_ms(latency, 0.5)} / "
        f"{_ms(latency, 0.99)} ms |",
        f"| OK pair latency, from its first send, p50 / p99 | {_ms(service, 0.5)} / "
        f"{_ms(service, 0.99)} ms |",
        f"| CPU during the load: replicas / clients / other work / machine busy | "
        f"{run.replica_cores:.2f} / {run.client_cores:.2f} / {run.other_cores:.2f} cores / "
        f"{100 * run.machine_busy:.0f}% of {info['nproc']} |",
        f"| no-op cell: machine busy before / other work during | "
        f"{100 * run.noop_busy_before:.0f}% / {run.noop_other_cores:.2f} cores"
        + (
            f" (disturbed even after {args.retries} more tries: the offered rate is low)"
            if run.noop_disturbed
            else ""
        )
        + " |",
        f"| Reserves applied (holds made) | {len(c.apply_delay):,}, of which "
        f"{sum(1 for x in c.apply_delay if x > args.call_timeout):,} after the pair's first "
        f"deadline ({args.call_timeout:g} s) had passed |",
        f"| when a replica applied a Reserve, from its pair's scheduled start, p50 / p99 / max "
        f"| {_s(c.apply_delay, 0.5)} / {_s(c.apply_delay, 0.99)} / {_s(c.apply_delay, 1.0)} s |",
        f"| holds made after every pair was over (requests queued in a replica whose "
        f"callers had gone) | {c.made_after_load:,}"
        + (f", the last {c.last_made_after_load:.1f} s after" if c.made_after_load else "")
        + " |",
        "",
        "Pairs by outcome (the call that ended the pair; FAILED_PRECONDITION with its rule):",
        "",
        "| outcome | pairs |",
        "|---|---:|",
        *(f"| {outcome} | {count:,} |" for outcome, count in outcomes.most_common()),
        "",
        "Calls by status code (every try, retries included):",
        "",
        "| RPC and status | calls |",
        "|---|---:|",
        *(f"| {key} | {count:,} |" for key, count in sorted(attempts.items())),
        "",
        "Retried after UNAVAILABLE, by final answer: "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(retried.items())) or "none")
        + ".",
        "",
        "Timeline (5 s buckets by the time a pair finished): OK pairs / failed pairs.",
        "",
        _timeline(run),
        "",
        f"Checks, in PostgreSQL, {args.ttl + _slack(args):g} s after every pair was over:",
        "",
        f"- (a) no committed booking lost: {c.committed_booked:,} of the {c.committed_seen:,} "
        f"holds the clients saw committed are booked; {len(c.lost)} are not"
        + (f" (first: {c.lost[:3]})" if c.lost else "")
        + f" — **{'PASS' if c.a else 'FAIL'}**",
        f"- (b) no hold left held: holds by state {_states(c.states)}; accounts' held total "
        f"{c.accounts_held:,} — **{'PASS' if c.b else 'FAIL'}**"
        + (
            f" ({c.held_made_after_load:,} of the held holds were made after every pair was "
            f"over; the replicas kept writing {c.drain_seconds or 0:.1f} s more, and once "
            f"every hold's own TTL had passed, {c.held_at_recheck} were held)"
            if not c.b
            else ""
        ),
        f"- (c) `eapctl quota verify`: exit {c.verify_exit}: {c.verify_text} — "
        f"**{'PASS' if c.c else 'FAIL'}**",
        f"- (d) sums: booked holds NT$ {c.booked_ntd:,} = agencies' spent NT$ "
        f"{c.agencies_spent:,}; booked minutes {c.booked_minutes:,} = providers' spent "
        f"{c.providers_spent:,} — **{'PASS' if c.d else 'FAIL'}**",
        "",
        f"Booked holds whose Commit the client never saw answered: "
        f"{c.states.get('booked', 0) - c.committed_booked:,} (a Commit applied after its "
        "caller's deadline, or answered by the replica as it was killed); holds given back by "
        f"expiry: {c.expired_entries:,}.",
        "",
    ]
    if samples:
        out += [
            "First detail of each failure: "
            + "; ".join(f"{key}: `{text}`" for key, text in sorted(samples.items()))[:1500],
            "",
        ]
    if run.server_errors:
        out += [
            f"The replicas logged {len(run.server_errors)} unexpected errors; the first: "
            f"`{run.server_errors[0][:300]}`",
            "",
        ]
    out += [
        f"Acceptance line 7 of issue 6: **{'PASS' if c.passed else 'FAIL'}**.",
        "",
        END_MARK,
    ]
    return "\n".join(out) + "\n"


def _s(values: list[float], q: float) -> str:
    return f"{_percentile(sorted(values), q):,.1f}" if values else "-"


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{state} {count:,}" for state, count in sorted(states.items())) or "none"


def _timeline(run: Run) -> str:
    end = max([run.duration, *(at for at, _ in run.finished)])
    buckets = math.ceil(end / 5)
    ok = [0] * buckets
    failed = [0] * buckets
    for at, outcome in run.finished:
        index = min(buckets - 1, max(0, int(at // 5)))
        if outcome == "OK":
            ok[index] += 1
        else:
            failed[index] += 1
    head = "| s | " + " | ".join(f"{5 * n}-{5 * n + 5}" for n in range(buckets)) + " |"
    rule = "|---|" + "---:|" * buckets
    oks = "| OK | " + " | ".join(f"{x:,}" for x in ok) + " |"
    fails = "| failed | " + " | ".join(f"{x:,}" for x in failed) + " |"
    return "\n".join([head, rule, oks, fails])


# -- main -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--duration", type=float, default=50.0, help="seconds of load")
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the load")
    parser.add_argument("--factor", type=float, default=2.0, help="x the target rate")
    parser.add_argument("--rate", type=float, default=0.0, help="offered pairs/s (override)")
    parser.add_argument("--ttl", type=int, default=10, help="hold TTL, seconds")
    parser.add_argument("--sweep-seconds", type=float, default=1.0)
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=24,
        help="EAP_MAX_CONCURRENT_RPCS of each replica (24 as deployed; 0: no limit)",
    )
    parser.add_argument("--call-timeout", type=float, default=2.0)
    parser.add_argument("--attempts", type=int, default=3, help="tries per call on UNAVAILABLE")
    parser.add_argument("--agencies", type=int, default=2)
    parser.add_argument("--providers", type=int, default=2)
    parser.add_argument("--noop-procs", type=int, default=3)
    parser.add_argument("--noop-duration", type=float, default=5.0)
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    parser.add_argument(
        "--retries", type=int, default=2, help="run the no-op cell again when disturbed"
    )
    parser.add_argument("--drain-limit", type=float, default=300.0)
    parser.add_argument("--keep-logs", help="copy the replicas' logs to this directory")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="chaos-bench-logs-") as logs:
        try:
            run = run_chaos(args, Path(logs))
        except Exception:
            for log in sorted(Path(logs).glob("*.log")):
                print(f"--- {log.name} (tail)", file=sys.stderr)
                print(log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log in Path(logs).glob("*.log"):
                    shutil.copy(log, args.keep_logs)
    section = render(run, args, info, started)
    print()
    print(section)
    if not args.no_write:
        write_section("chaos-bench", section)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if run.checks.passed else 1


if __name__ == "__main__":
    sys.exit(main())
