"""The front door's limit on calls served at once: past it a call is refused
at once, RESOURCE_EXHAUSTED with a retry hint; calls that finish work already
begun, and health checks, are served whatever the load."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from eap.calendar.v1 import calendar_pb2  # noqa: F401  (registers the descriptors)
from eap.matcher.v1 import matcher_pb2  # noqa: F401
from eap.quota.v1 import quota_pb2  # noqa: F401
from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime import policy
from services.runtime.auth import Authenticator, Role
from services.runtime.config import Settings
from services.runtime.interceptor import RuntimeInterceptor
from services.runtime.load_shedding import ConcurrencyLimit
from services.runtime.status import retry_delay

SLOW = "test.Slow"


async def test_past_the_limit_a_call_is_refused_at_once_but_finishing_calls_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for method in ("Work", "Finish"):  # as if the policy table had rows for them
        access = policy.Access({Role.ADMIN: policy.Scope.ANY})
        monkeypatch.setitem(policy.POLICY, f"{SLOW}/{method}", access)
    release = asyncio.Event()

    async def work(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await release.wait()
        return b"done"

    async def finish(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b"finished"

    async def check(
        request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    limit = ConcurrencyLimit(2, always_served=[f"{SLOW}/Finish"])
    server = grpc.aio.server(
        interceptors=[RuntimeInterceptor(Authenticator(Settings()), concurrency=limit)]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SLOW,
                {
                    "Work": grpc.unary_unary_rpc_method_handler(work),
                    "Finish": grpc.unary_unary_rpc_method_handler(finish),
                },
            ),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        check,
                        request_deserializer=health_pb2.HealthCheckRequest.FromString,
                        response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    labels = {"grpc_service": SLOW, "grpc_method": "Work"}
    shed_before = REGISTRY.get_sample_value("eap_calls_shed_total", labels) or 0.0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            work_call = channel.unary_unary(f"/{SLOW}/Work")
            busy = [asyncio.ensure_future(work_call(b"", timeout=10)) for _ in range(2)]
            for _ in range(200):
                if limit.in_flight == 2:
                    break
                await asyncio.sleep(0.01)
            assert limit.in_flight == 2

            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await work_call(b"", timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - started < 1  # refused, not queued
            assert retry_delay(caught.value) == 1.0
            assert REGISTRY.get_sample_value("eap_calls_shed_total", labels) == shed_before + 1

            # Work already begun is finished, and a probe is answered.
            assert await channel.unary_unary(f"/{SLOW}/Finish")(b"", timeout=10) == b"finished"
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

            release.set()
            assert await asyncio.gather(*busy) == [b"done", b"done"]
            assert limit.in_flight == 0
            assert await work_call(b"", timeout=10) == b"done"  # taken again
    finally:
        await server.stop(0)


def test_each_finishing_method_names_an_rpc_of_its_service() -> None:
    """A misspelt name would quietly let the limit refuse a Commit."""
    pool = descriptor_pool.Default()
    for service in (QuotaService(), MatcherService(), CalendarService()):
        methods = {m.name for m in pool.FindServiceByName(service.full_name).methods}
        assert service.finishing_methods <= methods, service.name
    assert QuotaService.finishing_methods == {"Commit", "Release"}
    assert Settings.from_env({"EAP_MAX_CONCURRENT_RPCS": "32"}).max_concurrent_rpcs == 32
    assert Settings.from_env({}).max_concurrent_rpcs == 0  # embedded: no limit
