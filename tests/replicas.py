"""Service replicas as real `eapctl serve` processes on one PostgreSQL
database and one Redis, for the tests that need several at once."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import stores

EAPCTL = str(Path(sys.executable).with_name("eapctl"))


@dataclass
class Replica:
    address: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    database_url: str
    env: dict[str, str]
    replicas: list[Replica]

    def logs(self) -> str:
        """The replicas' last log lines above INFO, for a failure's report."""
        report = []
        for replica in self.replicas:
            lines = [
                line[:1500]
                for line in replica.log.read_text().splitlines()
                if '"level": "info"' not in line
            ]
            report.append(f"--- {replica.address} (exit {replica.process.poll()}) ---")
            report.extend(lines[-10:])
        return "\n".join(report)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(replica: Replica, service: str, deadline: float) -> None:
    with grpc.insecure_channel(replica.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if replica.process.poll() is not None:
                raise AssertionError(
                    f"replica {replica.address} exited with {replica.process.returncode}:\n"
                    + replica.log.read_text()[-3000:]
                )
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"replica {replica.address} not SERVING in time:\n"
                    + replica.log.read_text()[-3000:]
                )
            time.sleep(0.1)


@contextlib.contextmanager
def cluster(
    tmp_path: Path,
    serve: Sequence[str],
    count: int,
    health_service: str,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """`count` processes of `eapctl serve *serve` on a fresh database, each
    SERVING `health_service` before the block runs. The database starts
    empty: `eapctl migrate` makes it, as it does before a deployment."""
    with stores.fresh_postgres_database(migrated=False) as url:
        env = {
            key: value
            for key, value in os.environ.items()
            if not (key.startswith("EAP_") or key in ("DATABASE_URL", "REDIS_URL"))
        }
        env.update(
            DATABASE_URL=url,
            REDIS_URL=stores.redis_url(),
            EAP_METRICS_PORT="-1",
            EAP_AUTH_MODE="dev",
            EAP_LOG_LEVEL="INFO",
            **(extra_env or {}),
        )
        migrated = subprocess.run(
            [EAPCTL, "migrate"], env=env, capture_output=True, text=True, timeout=60
        )
        assert migrated.returncode == 0, migrated.stderr
        started: list[Replica] = []
        try:
            for n in range(count):
                address = f"127.0.0.1:{free_port()}"
                log = tmp_path / f"replica-{n}.log"
                with log.open("wb") as sink:
                    process = subprocess.Popen(
                        [EAPCTL, "serve", *serve],
                        env={**env, "EAP_GRPC_ADDRESS": address},
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                started.append(Replica(address, process, log))
            deadline = time.monotonic() + 30
            for replica in started:
                _wait_serving(replica, health_service, deadline)
            yield Cluster(url, env, started)
        finally:
            print(Cluster(url, env, started).logs())  # pytest shows it when the test fails
            for replica in started:
                if replica.process.poll() is None:
                    replica.process.kill()
                    replica.process.wait(10)


@contextlib.contextmanager
def embedded(tmp_path: Path) -> Iterator[tuple[Replica, dict[str, str]]]:
    """One `eapctl serve all` on a SQLite file, as `make run` starts it;
    yields it and the environment that reaches it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("EAP_") or key in ("DATABASE_URL", "REDIS_URL"))
    }
    address = f"127.0.0.1:{free_port()}"
    env.update(
        EAP_GRPC_ADDRESS=address,
        EAP_METRICS_PORT="-1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'eap.db'}",
        EAP_AUTH_MODE="dev",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [EAPCTL, "serve", "all"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    replica = Replica(address, process, log)
    try:
        _wait_serving(replica, "eap.matcher.v1.MatcherService", time.monotonic() + 30)
        yield replica, env
    finally:
        process.terminate()
        process.wait(20)
