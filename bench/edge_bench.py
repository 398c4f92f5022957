"""The Envoy edge's cost: unary calls through it beside the same calls
straight to the services, in one run on one server.

Starts `eapctl serve all --edge` (SQLite, development auth) on free
loopback ports, then for 16 and 64 concurrent clients runs two cells against
that same process: `QuotaService/Ping` over gRPC directly, and the same call
over gRPC through the edge (Envoy proxying HTTP/2 to HTTP/2, as it does for
a browser's call once grpc_web or the Connect bridge has turned it into
gRPC). Clients are asyncio tasks in two spawned processes, each calling back
to back (closed loop) for a warm-up and then a measured window; a failed
call counts as an error.

Usage:  .venv/bin/python bench/edge_bench.py [--duration 5] [--clients 16,64]
Writes its section of bench/RESULTS.md (between edge-bench markers) unless
--no-write is given.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from results import machine_facts, marks, write_section

from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc

PROCESSES = 2
WARM_UP = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _client_loop(address: str, tasks: int, duration: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        start = time.perf_counter()
        measure_from, stop_at = start + WARM_UP, start + WARM_UP + duration

        async def one() -> None:
            nonlocal errors
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                try:
                    await stub.Ping(qpb.PingRequest(), timeout=5)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                ended = time.perf_counter()
                if began >= measure_from and ended <= stop_at:
                    latencies.append(ended - began)

        await asyncio.gather(*(one() for _ in range(tasks)))
    return latencies, errors


def _client(address: str, tasks: int, duration: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(_client_loop(address, tasks, duration)))


def cell(address: str, clients: int, duration: float) -> dict[str, float]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    share = [clients // PROCESSES + (i < clients % PROCESSES) for i in range(PROCESSES)]
    workers = [
        context.Process(target=_client, args=(address, n, duration, queue)) for n in share if n
    ]
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        found, failed = queue.get(timeout=duration + 60)
        latencies += found
        errors += failed
    for w in workers:
        w.join()
    latencies.sort()
    return {
        "calls_per_second": len(latencies) / duration,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "errors": errors,
    }


def _wait_for(port: int, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    grpc_port, edge_port = _free_port(), _free_port()
    scratch = Path(tempfile.mkdtemp(prefix="eap-edge-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EAP_")},
        "EAP_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "EAP_EDGE_ADDRESS": f"127.0.0.1:{edge_port}",
        "EAP_METRICS_PORT": "-1",
        "EAP_LOG_LEVEL": "WARNING",
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("eapctl")), "serve", "all", "--edge"],
        env=env,
        cwd=scratch,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        _wait_for(grpc_port)
        _wait_for(edge_port)
        for clients in (int(c) for c in args.clients.split(",")):
            for path, address in (
                ("direct gRPC", f"127.0.0.1:{grpc_port}"),
                ("through the edge", f"127.0.0.1:{edge_port}"),
            ):
                result = cell(address, clients, args.duration)
                rows.append((clients, path, result))
                print(clients, path, {k: round(v, 2) for k, v in result.items()})
    finally:
        server.terminate()
        server.wait(timeout=30)
    if not args.no_write:
        write_section("edge-bench", _section(rows, args))
    return 0


def _section(rows: list[tuple[int, str, dict[str, float]]], args: argparse.Namespace) -> str:
    start, end = marks("edge-bench")
    facts = machine_facts()
    lines = [
        start,
        "## Edge: unary calls through Envoy beside direct gRPC",
        "",
        f"`make bench-edge` (`.venv/bin/python bench/edge_bench.py --duration {args.duration:g} "
        f"--clients {args.clients}`), {time.strftime('%Y-%m-%d')}, {facts['code']}; "
        f"{facts['nproc']} cores ({facts['cpu']}), {facts['memory']}, Python {facts['python']}. "
        "One `eapctl serve all --edge` (SQLite, development auth); `QuotaService/Ping`, "
        f"closed loop, {PROCESSES} client processes, {WARM_UP:g} s warm-up, then "
        f"{args.duration:g} s measured; Envoy and the services share the machine's cores "
        "with the clients.",
        "",
        "| clients | path | calls/s | p50 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for clients, path, r in rows:
        lines.append(
            f"| {clients} | {path} | {r['calls_per_second']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {int(r['errors'])} |"
        )
    lines += ["", end, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
