"""Quota benchmark: Reserve+Commit pairs beside no-op Ping pairs, over gRPC.

For each backend (PostgreSQL + Redis, then SQLite) this starts one
`eapctl serve quota` process on loopback, seeds a county with a budget, caps
and an entitlement policy far larger than the run can use, and then, for each
number of concurrent clients, runs two cells against that same server:

* no-op: a pair is two `Ping` calls, one after the other;
* R+C: a pair is `Reserve` then `Commit` of the hold it made.

Each client is an asyncio task running pairs back to back (closed loop). The
clients are spread over several spawned client processes, since one Python
grpc.aio process tops out near 2,500 calls/s. A cell warms up, then measures
for a fixed window: pairs/s counts the pairs that completed inside the window,
latency is the wall time of one pair. A pair with a failed call counts as an
error. Before each cell the bench waits (briefly) for the machine to be quiet,
and runs a cell again when other work took a quarter core or more during it.
CPU of the server, PostgreSQL backends, Redis and the clients is reported per
cell, and pg_stat_activity is sampled during PostgreSQL R+C cells.

Each Reserve uses a distinct employee-week (one session per employee per ISO
week is a rule): a client's n-th reservation is for employee
`B<cell>-<proc>-<task>-<n // 52>` in ISO week `n % 52 + 1` of 2027, so one
Reserve in 52 also opens an employee account, as a year of weekly sessions
would. Clients are spread round-robin over the seeded agencies and providers.

Usage:  .venv/bin/python bench/quota_bench.py [--duration 6] [--clients 1,16,64,256]
Writes its section of bench/RESULTS.md (between quota-bench markers) unless
--no-write is given.
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
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from results import RESULTS, machine_facts, marks, write_section

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
START_MARK, END_MARK = marks("quota-bench")

POSTGRES_ADMIN_URL = os.environ.get(
    "EAP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EAP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

YEAR = 2027
WEEKS = 52  # ISO weeks in 2027
ORG = "bench-county"
CATEGORY = "official"
RATE_NTD = 2000
BUDGET_NTD = 10**11  # 50 million one-hour sessions per agency
CAP_MINUTES = 10_000_000  # the largest cap a contract may set: 166,666 sessions
ENTITLEMENT_MINUTES = 100_000  # the largest policy: far above 52 weekly hours
SESSION_MINUTES = 60
CALL_TIMEOUT = 60.0
TARGET_CLIENTS = 64
DISTURBED_CORES = 0.25  # other work above this during a cell makes it run again


# -- client processes -----------------------------------------------------------


@dataclass
class WorkerSpec:
    target: str
    mode: str  # "noop" or "rc"
    tasks: int
    proc: int
    first_task: int  # global index of this process's first task
    cell: str  # unique per cell, goes into every id
    agencies: list[str]
    providers: list[str]


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)  # seconds, pairs completed in window
    ok_total: int = 0  # successful pairs, warm-up and drain included
    errors: int = 0  # failed pairs, warm-up and drain included
    error_samples: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time inside the window


def _session_starts() -> list[Timestamp]:
    """10:00 Asia/Taipei on the Tuesday of each ISO week of YEAR."""
    taipei = dt.timezone(dt.timedelta(hours=8))
    stamps = []
    for week in range(1, WEEKS + 1):
        day = dt.date.fromisocalendar(YEAR, week, 2)
        stamp = Timestamp()
        stamp.FromDatetime(dt.datetime(day.year, day.month, day.day, 10, tzinfo=taipei))
        stamps.append(stamp)
    return stamps


async def _client(
    stub: quota_pb2_grpc.QuotaServiceStub,
    spec: WorkerSpec,
    task: int,
    window: tuple[float, float, float],
    result: WorkerResult,
) -> None:
    _, measure_from, measure_to = window
    global_task = spec.first_task + task
    agency = spec.agencies[global_task % len(spec.agencies)]
    # (g, g + g // A) walks every agency x provider pair as g grows
    provider = spec.providers[
        (global_task + global_task // len(spec.agencies)) % len(spec.providers)
    ]
    starts = _session_starts()
    prefix = f"{spec.cell}-{spec.proc}-{task}"
    ping = pb.PingRequest()
    n = 0
    while True:
        began = time.monotonic()
        if began >= measure_to:
            return
        ok = True
        try:
            if spec.mode == "noop":
                await stub.Ping(ping, timeout=CALL_TIMEOUT)
                await stub.Ping(ping, timeout=CALL_TIMEOUT)
            else:
                reserved = await stub.Reserve(
                    pb.ReserveRequest(
                        idempotency_key=f"{prefix}-{n}",
                        employee_id=f"B{prefix}-{n // WEEKS}",
                        agency_id=agency,
                        staff_category=CATEGORY,
                        provider_id=provider,
                        session_start=starts[n % WEEKS],
                        minutes=SESSION_MINUTES,
                    ),
                    timeout=CALL_TIMEOUT,
                )
                n += 1
                committed = await stub.Commit(
                    pb.CommitRequest(hold_id=reserved.hold.hold_id), timeout=CALL_TIMEOUT
                )
                if committed.hold.state != pb.HOLD_STATE_BOOKED:
                    raise RuntimeError(f"commit left the hold in state {committed.hold.state}")
        except (grpc.aio.AioRpcError, RuntimeError) as error:
            ok = False
            result.errors += 1
            if len(result.error_samples) < 5:
                if isinstance(error, grpc.aio.AioRpcError):
                    text = f"{error.code().name}: {error.details()}"
                else:
                    text = str(error)
                result.error_samples.append(text)
            if spec.mode == "rc":
                n += 1  # never reuse an employee-week that may be taken
        ended = time.monotonic()
        if ok:
            result.ok_total += 1
            if measure_from <= ended <= measure_to:
                result.latencies.append(ended - began)


async def _cpu_window(window: tuple[float, float, float], result: WorkerResult) -> None:
    _, measure_from, measure_to = window
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, measure_to - time.monotonic()))
    result.cpu_seconds = time.process_time() - before


async def _worker(conn: Connection, spec: WorkerSpec) -> None:
    channel = grpc.aio.insecure_channel(
        spec.target, options=[("grpc.use_local_subchannel_pool", 1)]
    )
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        await stub.Ping(pb.PingRequest(), timeout=10)
        conn.send("ready")
        loop = asyncio.get_running_loop()
        window: tuple[float, float, float] = await loop.run_in_executor(None, conn.recv)
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        result = WorkerResult()
        await asyncio.gather(
            _cpu_window(window, result),
            *(_client(stub, spec, task, window, result) for task in range(spec.tasks)),
        )
        conn.send(result)
    finally:
        await channel.close()


def _worker_entry(conn: Connection, spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up
    try:
        asyncio.run(_worker(conn, spec))
    except BaseException as error:
        with contextlib.suppress(Exception):
            conn.send(f"worker failed: {type(error).__name__}: {error}")
        raise


# -- CPU accounting -------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _cpu_of(match: str) -> dict[int, float]:
    """CPU seconds of every process whose command line contains `match`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if match in cmdline:
            cpu = _proc_cpu(int(entry))
            if cpu is not None:
                found[int(entry)] = cpu
    return found


def _machine_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    at: float
    server: float
    postgres: dict[int, float]
    redis: dict[int, float]
    machine: tuple[int, int]

    @classmethod
    def take(cls, server_pid: int, database: str) -> CpuSnapshot:
        return cls(
            time.monotonic(),
            _proc_cpu(server_pid) or 0.0,
            # the backends serving the bench's own database, not other clients'
            _postgres_backends(database),
            _cpu_of("redis-server"),
            _machine_ticks(),
        )


def _postgres_backends(database: str) -> dict[int, float]:
    if not database:
        return {}
    return {
        pid: cpu
        for pid, cpu in _cpu_of(f" {database} ").items()
        if Path(f"/proc/{pid}/comm").exists() and "postgres" in _comm(pid)
    }


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def machine_busy(seconds: float) -> float:
    """The share of all CPUs busy over the next `seconds`."""
    busy0, total0 = _machine_ticks()
    time.sleep(seconds)
    busy1, total1 = _machine_ticks()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Waits (up to `max_wait` s) until other work leaves the machine nearly idle,
    so that a cell does not share the CPUs with, say, a test run."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy(0.5)
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            print(f"  machine {100 * busy:.0f}% busy before the cell; waiting", flush=True)
            warned = True
        busy = machine_busy(1.0)
    return busy


class PgActivity:
    """Samples pg_stat_activity for the bench's database every 100 ms in a thread:
    how many sessions are running a statement, waiting for a lock, or sitting
    idle inside a transaction (waiting for the server process to send the next
    statement) on average."""

    def __init__(self, database: str, until: float) -> None:
        self.database = database
        self.until = until
        self.samples = 0
        self.totals: dict[str, float] = {}
        self.transactions_per_s = math.nan
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._sample()
        except Exception as error:  # e.g. max_connections reached: report, don't fail
            self.totals = {f"(sampling failed: {type(error).__name__})": 0.0}

    def _sample(self) -> None:
        import psycopg

        query = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        commits = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            first = connection.execute(commits, (self.database,)).fetchone()
            started = time.monotonic()
            while time.monotonic() < self.until:
                rows = connection.execute(query, (self.database,)).fetchall()
                self.samples += 1
                for state, wait_type, wait in rows:
                    if state == "active" and wait_type == "Lock":
                        key = f"waiting on a lock ({wait})"
                    elif state == "active" and wait_type not in (None, "Client"):
                        key = f"active, {wait_type}/{wait}"
                    elif state == "active":
                        key = "active (on CPU)"
                    else:
                        key = str(state)
                    self.totals[key] = self.totals.get(key, 0) + 1
                time.sleep(0.1)
            # statistics reach pg_stat_database when a backend goes idle; close enough
            connection.execute("SELECT pg_stat_clear_snapshot()")
            last = connection.execute(commits, (self.database,)).fetchone()
            if first and last:
                self.transactions_per_s = (last[0] - first[0]) / (time.monotonic() - started)

    def averages(self) -> dict[str, float]:
        self.thread.join(5)
        return {
            key: count / max(1, self.samples)
            for key, count in sorted(self.totals.items(), key=lambda item: -item[1])
        }


def _delta(after: dict[int, float], before: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- one cell ---------------------------------------------------------------------


@dataclass
class Cell:
    mode: str
    clients: int
    procs: int
    duration: float
    pairs: int
    ok_total: int
    errors: int
    error_samples: list[str]
    p50_ms: float
    p99_ms: float
    server_cores: float
    postgres_cores: float
    redis_cores: float
    client_cores: float
    machine_busy: float  # fraction of all CPUs busy
    other_cores: float  # machine busy minus the above: other work on the machine
    busy_before: float  # machine busy share just before the cell started
    pg_sessions: dict[str, float]  # average PostgreSQL sessions by state, in the window
    pg_transactions_per_s: float  # transactions committed or rolled back, in the window

    @property
    def disturbed(self) -> bool:
        """Other work on the machine took a quarter of a core or more."""
        return self.other_cores >= DISTURBED_CORES

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.duration

    @property
    def server_cpu_ms_per_pair(self) -> float:
        return 1000 * self.server_cores / self.pairs_per_s if self.pairs else math.nan


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_cell(
    target: str,
    server_pid: int,
    mode: str,
    clients: int,
    procs: int,
    cell: str,
    agencies: list[str],
    providers: list[str],
    warmup: float,
    duration: float,
    profile_to: Path | None = None,
    database: str = "",
    quiet_wait: float = 10.0,
) -> Cell:
    busy_before = wait_for_quiet(quiet_wait)
    n_procs = min(procs, clients)
    split = [clients // n_procs + (1 if i < clients % n_procs else 0) for i in range(n_procs)]
    ctx = mp.get_context("spawn")
    workers = []
    activity: PgActivity | None = None
    first = 0
    for proc, tasks in enumerate(split):
        parent_end, child_end = ctx.Pipe()
        spec = WorkerSpec(target, mode, tasks, proc, first, cell, agencies, providers)
        process = ctx.Process(target=_worker_entry, args=(child_end, spec), daemon=True)
        process.start()
        child_end.close()
        workers.append((process, parent_end))
        first += tasks
    try:
        for _, conn in workers:
            if not conn.poll(60):
                raise RuntimeError("a client process did not start within 60 s")
            message = conn.recv()
            if message != "ready":
                raise RuntimeError(str(message))
        begin = time.monotonic() + 0.2
        window = (begin, begin + warmup, begin + warmup + duration)
        for _, conn in workers:
            conn.send(window)
        time.sleep(max(0.0, window[1] - time.monotonic()))
        before = CpuSnapshot.take(server_pid, database)
        activity = PgActivity(database, window[2]) if database and mode == "rc" else None
        spy = _start_py_spy(server_pid, duration, profile_to) if profile_to else None
        time.sleep(max(0.0, window[2] - time.monotonic()))
        after = CpuSnapshot.take(server_pid, database)
        if spy is not None:
            spy.wait(60)
        results: list[WorkerResult] = []
        for _, conn in workers:
            if not conn.poll(CALL_TIMEOUT * 2 + 30):
                raise RuntimeError("a client process did not report")
            message = conn.recv()
            if not isinstance(message, WorkerResult):
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
    latencies = sorted(x for r in results for x in r.latencies)
    pg_sessions = activity.averages() if activity else {}
    pg_tps = activity.transactions_per_s if activity else math.nan
    elapsed = after.at - before.at
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    ncpu = len(os.sched_getaffinity(0))
    server_cores = (after.server - before.server) / elapsed
    postgres_cores = _delta(after.postgres, before.postgres) / elapsed
    redis_cores = _delta(after.redis, before.redis) / elapsed
    client_cores = sum(r.cpu_seconds for r in results) / duration
    machine = busy / total if total else math.nan
    return Cell(
        mode=mode,
        clients=clients,
        procs=n_procs,
        duration=duration,
        pairs=len(latencies),
        ok_total=sum(r.ok_total for r in results),
        errors=sum(r.errors for r in results),
        error_samples=[s for r in results for s in r.error_samples][:5],
        p50_ms=1000 * _percentile(latencies, 0.50),
        p99_ms=1000 * _percentile(latencies, 0.99),
        server_cores=server_cores,
        postgres_cores=postgres_cores,
        redis_cores=redis_cores,
        client_cores=client_cores,
        machine_busy=machine,
        other_cores=max(
            0.0, machine * ncpu - server_cores - postgres_cores - redis_cores - client_cores
        ),
        busy_before=busy_before,
        pg_sessions=pg_sessions,
        pg_transactions_per_s=pg_tps,
    )


def _start_py_spy(pid: int, duration: float, path: Path) -> subprocess.Popen[bytes]:
    """Samples the server's Python stacks (CPU only, not idle) for the window."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- the server -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"quota_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="quota-bench-") as directory:
        yield f"sqlite:///{directory}/quota.db"


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


@contextlib.contextmanager
def quota_server(database_url: str, redis_url: str | None, log_path: Path) -> Iterator[Any]:
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EAP_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        EAP_GRPC_ADDRESS=f"127.0.0.1:{port}",
        EAP_METRICS_PORT="-1",
        DATABASE_URL=database_url,
        EAP_AUTH_MODE="dev",
        EAP_LOG_LEVEL="INFO",
        EAP_SHUTDOWN_GRACE_SECONDS="2",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    eapctl = Path(sys.executable).parent / "eapctl"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(eapctl), "serve", "quota"], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        try:
            target = f"127.0.0.1:{port}"
            _wait_ready(target, server, log_path)
            server.target = target  # type: ignore[attr-defined]
            yield server
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_ready(target: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(
                    f"eapctl serve quota exited with {server.returncode}:\n"
                    + log_path.read_text()[-3000:]
                )
            try:
                stub.Ping(pb.PingRequest(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError("eapctl serve quota did not answer Ping within 90 s")


def seed(target: str, agencies: list[str], providers: list[str], tag: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        for agency in agencies:
            stub.UpsertAgency(
                pb.UpsertAgencyRequest(agency_id=agency, organisation=ORG, display_name=agency)
            )
            stub.TopUpBudget(
                pb.TopUpBudgetRequest(
                    idempotency_key=f"bench-budget-{tag}-{agency}",
                    agency_id=agency,
                    fiscal_year=YEAR,
                    amount_ntd=BUDGET_NTD,
                    reason="benchmark budget",
                )
            )
        stub.SetEntitlementPolicy(
            pb.SetEntitlementPolicyRequest(
                organisation=ORG,
                staff_category=CATEGORY,
                fiscal_year=YEAR,
                minutes=ENTITLEMENT_MINUTES,
            )
        )
        for provider in providers:
            stub.SetProviderContract(
                pb.SetProviderContractRequest(
                    provider_id=provider,
                    fiscal_year=YEAR,
                    hourly_rate_ntd=RATE_NTD,
                    cap_minutes=CAP_MINUTES,
                    reason="benchmark contract",
                )
            )


def booked_sessions(target: str, agencies: list[str]) -> int:
    """Sessions booked, from the agencies' spent budgets: every benchmark
    session costs the same. (The usage summary withholds cells of fewer than
    five people, so its sessions need not add up to the total.)"""
    session_cost = (RATE_NTD * SESSION_MINUTES + 30) // 60
    spent = 0
    with grpc.insecure_channel(target) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        for agency in agencies:
            account = pb.AccountRef(kind=pb.ACCOUNT_KIND_AGENCY, id=agency, fiscal_year=YEAR)
            balance = stub.GetBalance(pb.GetBalanceRequest(account=account), timeout=60)
            spent += balance.balance.spent
    sessions, remainder = divmod(spent, session_cost)
    if remainder:
        raise RuntimeError(f"NT${spent:,} spent is not a whole number of sessions")
    return sessions


def verify_ledger(database_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EAP_")}
    env["DATABASE_URL"] = database_url
    env["EAP_LOG_LEVEL"] = "WARNING"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "eapctl"), "quota", "verify"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    return f"exit {done.returncode}: {lines[-1] if lines else ''}"


# -- a backend --------------------------------------------------------------------


@dataclass
class BackendRun:
    name: str
    label: str
    rows: list[tuple[Cell, Cell]] = field(default_factory=list)
    verify: str = ""
    booked: int = 0
    rc_ok_total: int = 0
    server_errors: list[str] = field(default_factory=list)
    retried: int = 0


def run_backend(name: str, args: argparse.Namespace, log_dir: Path) -> BackendRun:
    agencies = [f"BA{i}" for i in range(args.agencies)]
    providers = [f"BP{i}" for i in range(args.providers)]
    tag = uuid.uuid4().hex[:6]
    if name == "postgres":
        store: contextlib.AbstractContextManager[str] = postgres_database()
        redis_url: str | None = REDIS_URL
        label = f"PostgreSQL + Redis ({REDIS_URL})"
    else:
        store = sqlite_database()
        redis_url = None
        label = "SQLite (WAL file in a temporary directory, no Redis)"
    run = BackendRun(name, label)
    with store as database_url:
        if redis_url:
            _flush_redis()
        with quota_server(database_url, redis_url, log_dir / f"server-{name}.log") as server:
            seed(server.target, agencies, providers, tag)
            for index, clients in enumerate(args.clients):
                pair = []
                for mode in ("noop", "rc"):
                    for attempt in range(args.retries + 1):
                        cell = run_cell(
                            server.target,
                            server.pid,
                            mode,
                            clients,
                            args.procs,
                            f"{tag}{index}{mode[0]}{attempt}",
                            agencies,
                            providers,
                            args.warmup,
                            args.duration,
                            _profile_path(args, name, mode, clients),
                            database_url.rsplit("/", 1)[1] if name == "postgres" else "",
                            args.quiet_wait,
                        )
                        _print_cell(name, cell)
                        run.retried += attempt > 0
                        if not cell.disturbed:
                            break
                        if time.monotonic() > args.retry_until:
                            print("  no time left to run it again", flush=True)
                            break
                        print(
                            f"  other work took {cell.other_cores:.2f} cores during the cell"
                            + ("; running it again" if attempt < args.retries else ""),
                            flush=True,
                        )
                    pair.append(cell)
                run.rows.append((pair[0], pair[1]))
            run.booked = booked_sessions(server.target, agencies)
        run.rc_ok_total = sum(rc.ok_total for _, rc in run.rows)
        run.verify = verify_ledger(database_url)
        print(
            f"[{name}] booked sessions in the ledger: {run.booked}; "
            f"successful R+C pairs seen by clients: {run.rc_ok_total}; verify: {run.verify}",
            flush=True,
        )
        if redis_url:
            _flush_redis()
    return run


def _profile_path(args: argparse.Namespace, backend: str, mode: str, clients: int) -> Path | None:
    if f"{mode}:{clients}" not in args.py_spy:
        return None
    path = Path(args.profile_dir) / f"{backend}-{mode}-{clients}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{backend}] py-spy profile of the server -> {path}", flush=True)
    return path


def _server_errors(log: Path) -> list[str]:
    """The server's log lines at level error (unexpected exceptions)."""
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if '"level": "error"' in line]


def _print_cell(backend: str, cell: Cell) -> None:
    print(
        f"[{backend}] {cell.mode:>4} clients={cell.clients:<3} procs={cell.procs} "
        f"pairs/s={cell.pairs_per_s:8.1f} p50={cell.p50_ms:7.2f} ms p99={cell.p99_ms:7.2f} ms "
        f"errors={cell.errors} server={cell.server_cores:.2f} cores "
        f"postgres={cell.postgres_cores:.2f} clients={cell.client_cores:.2f} "
        f"other={cell.other_cores:.2f} machine busy={100 * cell.machine_busy:.0f}%"
        + (f" first errors: {cell.error_samples}" if cell.error_samples else ""),
        flush=True,
    )
    if cell.pg_sessions:
        print(
            f"    postgres sessions (average): {_sessions(cell)}; "
            f"{cell.pg_transactions_per_s:,.0f} transactions/s",
            flush=True,
        )


def _sessions(cell: Cell) -> str:
    return ", ".join(f"{key} {value:.1f}" for key, value in cell.pg_sessions.items())


# -- the report -------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    info = machine_facts()
    info["grpcio"] = grpc.__version__
    info["sqlite"] = sqlite3.sqlite_version
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:

            def show(setting: str) -> str:
                row = connection.execute(f"SHOW {setting}").fetchone()
                return str(row[0]) if row else "?"

            info["postgres"] = show("server_version")
            info["postgres_settings"] = ", ".join(
                f"{s}={show(s)}"
                for s in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
            )
    with contextlib.suppress(Exception):
        import redis

        info["redis"] = str(redis.Redis.from_url(REDIS_URL).info("server")["redis_version"])
    return info


def _mark(cell: Cell) -> str:
    return " \\*" if cell.disturbed else ""


def _ms(cell: Cell) -> str:
    return f"{cell.p50_ms:.2f} / {cell.p99_ms:.2f}"


def render(
    runs: list[BackendRun], args: argparse.Namespace, info: dict[str, str], started: str
) -> str:
    out = [
        START_MARK,
        "## Quota: Reserve+Commit vs no-op",
        "",
        "Command: `cd /work/main && .venv/bin/python bench/quota_bench.py"
        + (f" {' '.join(args.argv)}" if args.argv else "")
        + "` (also `make bench-quota`)",
        "",
        f"Date: {started} (UTC)",
        "",
        "Machine:",
        "",
        f"- nproc: {info['nproc']}; CPU: {info['cpu']}; memory: {info['memory']}",
        f"- Linux {info['kernel']}; Python {info['python']}; grpcio {info['grpcio']}; "
        f"SQLite {info['sqlite']}",
        f"- PostgreSQL {info.get('postgres', 'unknown')} "
        f"({info.get('postgres_settings', '')}); Redis {info.get('redis', 'unknown')}",
        f"- code: {info.get('code', 'unknown')}",
        "",
        "Method: one `eapctl serve quota` process on 127.0.0.1 (EAP_AUTH_MODE=dev, "
        "EAP_METRICS_PORT=-1, EAP_LOG_LEVEL=INFO) per backend; the no-op and R+C cells of "
        "a row run one after the other against that same server. Each client is an "
        "asyncio task running pairs back to back; the clients are spread over "
        f"min({args.procs}, clients) spawned client processes (one grpc.aio channel each). "
        f"Each cell: {args.warmup:g} s warm-up, then {args.duration:g} s measured. "
        "pairs/s = pairs completed in the measured window / its length; latency = wall "
        "time of one pair (no-op: Ping + Ping; R+C: Reserve + Commit of its hold). "
        "errors = failed pairs over the whole cell, warm-up included (no-op / R+C). "
        f"Seed: {args.agencies} agencies with NT$ {BUDGET_NTD:,} each, {args.providers} "
        f"providers with a {CAP_MINUTES:,}-minute cap, entitlement policy "
        f"{ENTITLEMENT_MINUTES:,} minutes; clients spread round-robin over agency x "
        "provider. Every Reserve is a distinct employee-week in 2027 (one employee per "
        f"client per {WEEKS} weeks, so 1 Reserve in {WEEKS} opens an employee account). "
        f"Before each cell the bench waits up to {args.quiet_wait:g} s for the machine to "
        "be under 15% busy, and runs a cell again (up to "
        f"{args.retries} times) when other work took {DISTURBED_CORES} cores or more "
        "during it; the `other` CPU column shows what other work (e.g. a test run) took "
        "during the window.",
        "",
    ]
    ceiling = max(
        ((run.name, noop) for run in runs for noop, _ in run.rows),
        key=lambda item: item[1].pairs_per_s,
        default=None,
    )
    for run in runs:
        out += [
            f"### {run.label}",
            "",
            "| clients | no-op pairs/s | no-op p50/p99 ms | R+C pairs/s | R+C p50/p99 ms "
            "| ratio R+C/no-op | errors |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for noop, rc in run.rows:
            ratio = rc.pairs_per_s / noop.pairs_per_s if noop.pairs else math.nan
            out.append(
                f"| {noop.clients} | {noop.pairs_per_s:,.0f}{_mark(noop)} | {_ms(noop)} | "
                f"{rc.pairs_per_s:,.0f}{_mark(rc)} | {_ms(rc)} | {ratio:.2f} | "
                f"{noop.errors} / {rc.errors} |"
            )
        if any(c.disturbed for row in run.rows for c in row):
            out += [
                "",
                f"\\* other work on the machine took {DISTURBED_CORES} cores or more during "
                f"this cell even after {args.retries} more tries; read it with care.",
            ]
        if run.retried:
            out += ["", f"{run.retried} cells were run again because other work disturbed them."]
        out += [
            "",
            "CPU during the measured window, in cores (the machine has "
            f"{info['nproc']}): the server process, the PostgreSQL backends of the bench's "
            "database, Redis, the client processes, other work on the machine (busy "
            "minus those), and the whole machine's busy share; server CPU per pair.",
            "",
            "| clients | cell | server | postgres | redis | clients | other | machine busy "
            "| server ms CPU/pair |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for noop, rc in run.rows:
            for cell in (noop, rc):
                out.append(
                    f"| {cell.clients} | {'no-op' if cell.mode == 'noop' else 'R+C'} | "
                    f"{cell.server_cores:.2f} | {cell.postgres_cores:.2f} | "
                    f"{cell.redis_cores:.2f} | {cell.client_cores:.2f} | "
                    f"{cell.other_cores:.2f} | {100 * cell.machine_busy:.0f}% | "
                    f"{cell.server_cpu_ms_per_pair:.2f} |"
                )
        if any(rc.pg_sessions for _, rc in run.rows):
            out += [
                "",
                "PostgreSQL sessions of the bench's database during the R+C window "
                "(pg_stat_activity every 100 ms, average count by state): `idle in "
                "transaction` = a transaction is open, holding its row locks, while "
                "PostgreSQL waits for the server process's next statement. Transactions/s "
                "from pg_stat_database over the window; RPCs per transaction = 2 x R+C "
                "pairs/s / transactions/s (how many requests one transaction carries).",
                "",
                "| clients | sessions by state | transactions/s | RPCs per transaction |",
                "|---:|---|---:|---:|",
            ]
            out += [
                f"| {rc.clients} | {_sessions(rc)} | {rc.pg_transactions_per_s:,.0f} | "
                f"{2 * rc.pairs_per_s / rc.pg_transactions_per_s:.1f} |"
                for _, rc in run.rows
            ]
        samples = sorted({s for row in run.rows for c in row for s in c.error_samples})
        out += [
            "",
            f"Consistency: {run.booked:,} sessions booked in the ledger "
            f"(the agencies' spent budgets) for {run.rc_ok_total:,} successful R+C pairs "
            f"seen by the clients (warm-up and drain included); `eapctl quota verify`: "
            f"{run.verify}.",
        ]
        if samples:
            out.append(f"First errors: {'; '.join(samples[:5])}")
        if run.server_errors:
            out.append(
                f"The server logged {len(run.server_errors)} unexpected errors; the first: "
                f"`{_exception_summary(run.server_errors[0])}`"
            )
        out.append("")
    if ceiling is not None:
        name, cell = ceiling
        out += [
            f"No-op ceiling of this run: {cell.pairs_per_s:,.0f} pairs/s "
            f"({2 * cell.pairs_per_s:,.0f} Ping calls/s) at {cell.clients} clients on the "
            f"{name} server, with the server process at {cell.server_cores:.2f} cores, the "
            f"client processes at {cell.client_cores:.2f} cores and the machine "
            f"{100 * cell.machine_busy:.0f}% busy.",
            "",
        ]
    out += _verdict(runs)
    out.append(END_MARK)
    return "\n".join(out) + "\n"


def _exception_summary(line: str) -> str:
    import json

    with contextlib.suppress(ValueError):
        entry = json.loads(line)
        trace = str(entry.get("exc", "")).strip().splitlines()
        return f"{entry.get('msg')} in {entry.get('grpc_method')}: {trace[-1] if trace else ''}"
    return line[:300]


def _verdict(runs: list[BackendRun]) -> list[str]:
    target = (
        f"Target: PostgreSQL at {TARGET_CLIENTS} clients: R+C pairs/s >= half of no-op "
        "pairs/s in the same run, and p99 < 50 ms."
    )
    postgres = next((run for run in runs if run.name == "postgres"), None)
    row = (
        next((r for r in postgres.rows if r[0].clients == TARGET_CLIENTS), None)
        if postgres
        else None
    )
    if row is None:
        return [f"{target} **Not measured** in this run.", ""]
    noop, rc = row
    half = noop.pairs_per_s / 2
    throughput_ok = rc.pairs_per_s >= half
    latency_ok = rc.p99_ms < 50
    errors_ok = rc.errors == 0
    verdict = "PASS" if throughput_ok and latency_ok and errors_ok else "FAIL"
    if noop.disturbed or rc.disturbed:
        verdict += " (but other work disturbed this row; run again on a quiet machine)"
    return [
        f"{target} **{verdict}**: R+C {rc.pairs_per_s:,.0f} pairs/s vs half of no-op "
        f"{half:,.0f} pairs/s ({'met' if throughput_ok else 'missed'}: ratio "
        f"{rc.pairs_per_s / noop.pairs_per_s:.2f}); R+C p99 {rc.p99_ms:.1f} ms "
        f"({'met' if latency_ok else 'missed'}); {rc.errors} errors.",
        "",
    ]


# -- main -------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=_ints, default=[1, 16, 64, 256])
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--procs", type=int, default=3, help="client processes (at most)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--agencies", type=int, default=2)
    parser.add_argument("--providers", type=int, default=2)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each cell, wait up to this many seconds for other work to stop",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run a cell again (up to this many times) when other work disturbed it",
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=360.0,
        help="seconds into the run after which disturbed cells are no longer run again",
    )
    parser.add_argument("--keep-logs", help="copy the server logs to this directory")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument(
        "--py-spy",
        type=lambda text: set(text.split(",")),
        default=set(),
        help="profile the server with py-spy during these cells, e.g. rc:64,noop:64",
    )
    parser.add_argument("--profile-dir", default=tempfile.gettempdir() + "/quota-bench-profiles")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.retry_until = time.monotonic() + args.retry_budget
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    info = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="quota-bench-logs-") as logs:
        for name in args.backends.split(","):
            try:
                runs.append(run_backend(name, args, Path(logs)))
            except Exception:
                for log in sorted(Path(logs).glob("*.log")):
                    print(f"--- {log.name} (tail)", file=sys.stderr)
                    print(log.read_text()[-3000:], file=sys.stderr)
                raise
            runs[-1].server_errors = _server_errors(Path(logs) / f"server-{name}.log")
            for line in runs[-1].server_errors[:3]:
                print(f"--- server error: {line[:4000]}", file=sys.stderr)
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(logs) / f"server-{name}.log", args.keep_logs)
    section = render(runs, args, info, started)
    print()
    print(section)
    if not args.no_write:
        write_section("quota-bench", section)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
