"""One way to start any set of services: `eapctl serve quota` in a Kubernetes
pod, `eapctl serve all` on a laptop, `start()` in a test.

Around the services it adds gRPC health (a status per service, NOT_SERVING
while a store it needs is unreachable, for readiness; "liveness", SERVING
while the process serves), server reflection, the Prometheus
endpoint, the interceptor, and graceful shutdown on SIGTERM: health turns
NOT_SERVING, the port stops accepting, in-flight calls get the grace period.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.runtime import audit_servicer, clock, metrics
from services.runtime.auth import SYSTEM_IDENTITY, Authenticator, set_identity
from services.runtime.config import Settings
from services.runtime.decoding import DecodingInterceptor
from services.runtime.interceptor import RuntimeInterceptor
from services.runtime.load_shedding import ConcurrencyLimit
from services.runtime.metrics_http import start_metrics_server
from services.runtime.rate_limit import RateLimiter
from services.runtime.tenancy import TenantRouter, set_tenant
from services.runtime.tls import TlsFiles

log = logging.getLogger("eap.server")

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BACKGROUND_STOP_SECONDS = 10.0  # for background loops to end once cancelled
LIVENESS = "liveness"  # the health name a liveness probe asks for


@dataclass
class Runtime:
    """What the runtime hands each service when it starts."""

    settings: Settings
    redis: redis_asyncio.Redis | None = None
    port: int = 0  # the gRPC port, once bound: services in one process call each other on it
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, coroutine: object, name: str) -> None:
        """Runs a service's background loop until the server stops."""
        self.background.append(asyncio.create_task(coroutine, name=name))  # type: ignore[arg-type]


class Service(Protocol):
    """What a service gives the runtime: one instance serves one tenant."""

    name: str  # short name: quota, matcher, calendar
    tenant: str  # whose data it serves, set by the runtime before `start`
    full_name: str  # the gRPC service name, e.g. eap.quota.v1.QuotaService
    migrations: Path  # its Alembic scripts
    version_table: str  # its own Alembic version table, so services can share a database
    # RPCs that finish work an earlier call began: served whatever the load
    finishing_methods: frozenset[str]

    async def start(self, runtime: Runtime) -> None:
        """Connects its stores, migrates them, starts its background loops."""

    def servicer(self) -> object:
        """Its gRPC servicer (for its tenant), once started."""

    def add_to_server(self, servicer: object, server: aio.Server) -> None:
        """Adds a servicer of its gRPC service to the server (the generated
        `add_...Servicer_to_server`)."""

    async def probe(self) -> dict[str, bool]:
        """Reachability of each store it needs, by store name."""

    async def close(self) -> None:
        """Releases its stores."""


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    services: Sequence[Service]  # the first tenant's instances: those `start` was given
    runtime: Runtime
    health: HealthServicer
    metrics_port: int | None
    tenants: dict[str, list[Service]] = field(default_factory=dict)  # every tenant's
    probes: tuple[aio.Server, int] | None = None  # the plaintext health port, and its number

    @property
    def instances(self) -> list[Service]:
        return [s for services in self.tenants.values() for s in services] or list(self.services)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.runtime.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.probes is not None:
            await self.probes[0].stop(0)
        for task in self.runtime.background:
            task.cancel()
        if self.runtime.background:
            # A loop that ignores its cancellation must not hold the process
            # past SIGTERM; say where it is stuck instead.
            _, stuck = await asyncio.wait(self.runtime.background, timeout=BACKGROUND_STOP_SECONDS)
            for task in stuck:
                log.error(
                    "background task did not stop",
                    extra={"task": task.get_name(), "stack": _stack(task), "others": _others()},
                )
        for service in self.instances:
            await service.close()
        if self.runtime.redis is not None:
            await self.runtime.redis.aclose()


def _stack(task: asyncio.Task[object]) -> str:
    where = io.StringIO()
    task.print_stack(file=where)
    return where.getvalue()


def _others() -> list[str]:
    """Every other unfinished task's stack: what a stuck one waits for."""
    current = asyncio.current_task()
    return [_stack(t) for t in asyncio.all_tasks() if t is not current and not t.done()]


async def _start_for(tenant: str, service: Service, runtime: Runtime) -> None:
    """Starts `service` for `tenant`, in a task of its own: the loops it
    spawns keep the tenant (tasks copy the context they start in)."""
    set_tenant(tenant)
    set_identity(replace(SYSTEM_IDENTITY, tenant=tenant))
    service.tenant = tenant
    await service.start(runtime)


async def start(services: Sequence[Service], settings: Settings) -> RunningServer:
    """Serves `services` for the first tenant, and instances of the same
    classes for every other tenant of `settings.tenants` (tenancy.py)."""
    runtime = Runtime(settings=settings)
    if settings.redis_url:
        runtime.redis = redis_asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
    tenants: dict[str, list[Service]] = {settings.tenants[0]: list(services)}
    for tenant in settings.tenants[1:]:
        tenants[tenant] = [type(service)() for service in services]
    for tenant, instances in tenants.items():
        for service in instances:
            await asyncio.create_task(_start_for(tenant, service, runtime))

    server = aio.server(
        # The runtime's around every call; inside it, requests that do not
        # decode become INVALID_ARGUMENT instead of gRPC's own UNKNOWN.
        interceptors=[
            RuntimeInterceptor(
                Authenticator(settings),
                RateLimiter(runtime.redis, settings.rate_limit_per_second),
                ConcurrencyLimit(
                    settings.max_concurrent_rpcs,
                    (f"{s.full_name}/{m}" for s in services for m in s.finishing_methods),
                ),
                settings.default_language,
            ),
            DecodingInterceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    for i, service in enumerate(services):
        service.add_to_server(
            TenantRouter(
                {tenant: instances[i].servicer() for tenant, instances in tenants.items()}
            ),
            server,
        )
    audit_service = audit_servicer.register(
        server,
        {
            tenant: [trail for s in instances if (trail := getattr(s, "audit", None)) is not None]
            for tenant, instances in tenants.items()
        },
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *(s.full_name for s in services),
            *([audit_service] if audit_service else []),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = (
        server.add_secure_port(
            settings.grpc_address, TlsFiles(settings.tls_dir).server_credentials()
        )
        if settings.tls_dir
        else server.add_insecure_port(settings.grpc_address)
    )
    if port == 0:
        raise OSError(f"cannot listen on {settings.grpc_address}")
    runtime.port = port
    probes = _probe_server(health, settings.probe_address) if settings.probe_address else None

    metrics_port = None
    if settings.metrics_port >= 0:
        http_server = start_metrics_server(
            settings.metrics_port, _host(settings), settings.metrics_token
        )
        metrics_port = http_server.server_port

    await server.start()
    if probes is not None:
        await probes[0].start()
    running = RunningServer(
        server, port, services, runtime, health, metrics_port, tenants, probes=probes
    )
    # For liveness probes: the process serves, whatever its stores do (a
    # database outage makes pods unready, never restarts them all).
    await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    await _update_health(running)
    runtime.spawn(_probe_forever(running), "health-probe")
    log.info(
        "serving",
        extra={"services": [s.name for s in services], "port": port, "metrics_port": metrics_port},
    )
    return running


def _probe_server(health: HealthServicer, address: str) -> tuple[aio.Server, int]:
    """gRPC health alone, in plaintext: kubelet's probes speak no TLS, and
    the health status is all this port tells."""
    probes = aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, probes)
    port = probes.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return probes, port


def _host(settings: Settings) -> str:
    host = settings.grpc_address.rpartition(":")[0].strip("[]")
    return host or "0.0.0.0"


async def _update_health(running: RunningServer) -> None:
    """Each service SERVING while some tenant's stores all answer (one
    tenant's database down must not take the others' pods out of the
    Service: its calls fail UNAVAILABLE, and eap_store_up says whose), and
    `<service>/<tenant>` for each tenant apart."""
    serving_of: dict[str, bool] = {}
    for service in running.instances:
        try:
            stores = await asyncio.wait_for(service.probe(), timeout=5)
        except Exception:
            stores = {"database": False}
        for store, up in stores.items():
            metrics.STORE_UP.labels(service.name, store, service.tenant).set(1 if up else 0)
            if not up:
                metrics.STORE_ERRORS.labels(service.name, store).inc()
        tenant_up = all(stores.values())
        serving_of[service.full_name] = serving_of.get(service.full_name, False) or tenant_up
        await running.health.set(f"{service.full_name}/{service.tenant}", _status(tenant_up))
    for full_name, serving in serving_of.items():
        await running.health.set(full_name, _status(serving))
    await running.health.set("", _status(all(serving_of.values())))


def _status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )


async def _probe_forever(running: RunningServer) -> None:
    while True:
        await asyncio.sleep(running.runtime.settings.health_probe_seconds)
        await _update_health(running)


class Companion(Protocol):
    """A process that runs beside the services (the Envoy edge)."""

    async def start(self, running: RunningServer) -> None: ...

    async def stop(self) -> None: ...


async def serve(
    services: Sequence[Service], settings: Settings, companions: Sequence[Companion] = ()
) -> None:
    """Serves (with `companions` beside, started once the services listen)
    until SIGTERM or SIGINT, then shuts down gracefully: companions first."""
    if settings.dev_clock_file:
        clock.follow(settings.dev_clock_file)
    running = await start(services, settings)
    started: list[Companion] = []
    try:
        for companion in companions:
            await companion.start(running)
            started.append(companion)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
        for companion in reversed(started):
            await companion.stop()
        await running.stop()
        log.info("stopped")
