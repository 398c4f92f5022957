"""The shared runtime: reflection, health, metrics, auth, request ids, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli import registry
from services.quota.service import QuotaService
from services.runtime.auth import Authenticator
from services.runtime.config import Settings
from services.runtime.interceptor import RuntimeInterceptor
from services.runtime.server import start
from tests.conftest import QuotaClient
from tests.county import reserve_request, seed

SECRET = "test-secret-0123456789-0123456789-abc"


def settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        grpc_address="127.0.0.1:0", metrics_port=0, database_url=f"sqlite:///{tmp_path}/eap.db"
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def token(role: str = "admin", **claims: object) -> str:
    payload = {
        "sub": "svc-frontend",
        "role": role,
        "iss": "eap",
        "aud": "eap-suite",
        "exp": int(time.time()) + 300,
        **claims,
    }
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def test_reflection_lists_every_service_and_health(tmp_path: Path) -> None:
    server = await start(registry.build(list(registry.SERVICES)), settings(tmp_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names = set()
            async for response in stub.ServerReflectionInfo(iter([request])):
                names |= {s.name for s in response.list_services_response.service}
        assert {
            "eap.quota.v1.QuotaService",
            "eap.matcher.v1.MatcherService",
            "eap.calendar.v1.CalendarService",
            "grpc.health.v1.Health",
        } <= names
    finally:
        await server.stop(0)


async def test_metrics_endpoint_serves_grpc_server_metrics(quota: QuotaClient) -> None:
    refused = {
        "grpc_type": "unary",
        "grpc_service": "eap.quota.v1.QuotaService",
        "grpc_method": "Reserve",
        "grpc_code": "FAILED_PRECONDITION",
    }
    before = REGISTRY.get_sample_value("grpc_server_handled_total", refused) or 0.0
    await seed(quota.stub)
    await quota.stub.Reserve(reserve_request("m1"))
    with pytest.raises(grpc.aio.AioRpcError):
        await quota.stub.Reserve(reserve_request("m2"))  # the same week: refused
    url = f"http://127.0.0.1:{quota.server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert samples[("grpc_server_handled_total", tuple(sorted(refused.items())))] == before + 1
    labels = 'grpc_method="Reserve",grpc_service="eap.quota.v1.QuotaService",grpc_type="unary"'
    assert f"grpc_server_started_total{{{labels}}}" in body
    assert f"grpc_server_handling_seconds_bucket{{{labels},le=" in body
    assert 'eap_store_up{service="quota",store="database"} 1.0' in body
    assert "E1" not in body  # no employee ids in metrics


async def test_health_turns_not_serving_when_the_database_goes(tmp_path: Path) -> None:
    service = QuotaService()
    server = await start([service], settings(tmp_path, health_probe_seconds=0.1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="eap.quota.v1.QuotaService")
            assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING

            async def broken() -> dict[str, bool]:
                return {"database": False}

            service.probe = broken  # type: ignore[method-assign]
            await asyncio.sleep(0.4)
            assert (await health.Check(check)).status == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            # Unready, but alive: a liveness probe must not restart it for that.
            alive = health_pb2.HealthCheckRequest(service="liveness")
            assert (await health.Check(alive)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


async def test_probe_finds_a_dead_redis(tmp_path: Path) -> None:
    service = QuotaService()
    server = await start([service], settings(tmp_path, redis_url="redis://127.0.0.1:1/0"))
    try:
        assert await service.probe() == {"database": True, "redis": False}
    finally:
        await server.stop(0)


async def test_jwt_mode_needs_a_valid_bearer_token(tmp_path: Path) -> None:
    server = await start([QuotaService()], settings(tmp_path, auth_mode="jwt", jwt_key=SECRET))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = quota_pb2_grpc.QuotaServiceStub(channel)
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer nonsense"),), grpc.StatusCode.UNAUTHENTICATED),
                (
                    (("authorization", f"Bearer {token(exp=int(time.time()) - 10)}"),),
                    grpc.StatusCode.UNAUTHENTICATED,
                ),
                (
                    (("authorization", f"Bearer {token(aud='other')}"),),
                    grpc.StatusCode.UNAUTHENTICATED,
                ),
                (
                    (("authorization", f"Bearer {token(role='king')}"),),
                    grpc.StatusCode.UNAUTHENTICATED,
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Ping(pb.PingRequest(), metadata=metadata)
                assert caught.value.code() == code
            good = (("authorization", f"Bearer {token()}"),)
            await stub.Ping(pb.PingRequest(), metadata=good)
            await stub.UpsertAgency(
                pb.UpsertAgencyRequest(agency_id="A", organisation="o", display_name="A"),
                metadata=good,
            )
            entries = await stub.ListLedger(pb.ListLedgerRequest(), metadata=good)
            assert entries.entries == []
            # Health needs no token: kubelet probes it.
            health = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(0)


async def test_request_id_travels_back(quota: QuotaClient) -> None:
    call = quota.stub.Ping(pb.PingRequest(), metadata=(("x-request-id", "abc-123"),))
    await call
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())


async def test_deadline_stops_the_handler() -> None:
    """A handler still working when the caller's deadline passes is stopped,
    so a stuck call does not hold a database connection past its use."""
    stopped = asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()
        return b""

    server = grpc.aio.server(interceptors=[RuntimeInterceptor(Authenticator(Settings()))])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(slow)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Slow/Call")
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", timeout=0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(stopped.wait(), timeout=2)
            assert time.monotonic() - started < 2
    finally:
        await server.stop(0)


def test_sigterm_finishes_in_flight_calls_then_exits(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EAP_GRPC_ADDRESS": "127.0.0.1:0",
        "EAP_METRICS_PORT": "-1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/eap.db",
        "EAP_SHUTDOWN_GRACE_SECONDS": "5",
    }
    eapctl = Path(sys.executable).with_name("eapctl")
    process = subprocess.Popen(
        [str(eapctl), "serve", "all"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            if '"serving"' in line:
                port = int(line.split('"port": ')[1].split(",")[0])
                break
        assert port, "the server did not say it was serving"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        rest = process.stderr.read()
        assert '"shutting down"' in rest and '"stopped"' in rest
    finally:
        process.kill()


def test_bad_configuration_is_reported_not_raised() -> None:
    eapctl = Path(sys.executable).with_name("eapctl")
    result = subprocess.run(
        [str(eapctl), "quota", "verify"],
        env={**os.environ, "EAP_METRICS_PORT": "many"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "EAP_METRICS_PORT must be a whole number" in result.stderr


async def test_unexpected_errors_become_internal_with_a_correlation_id_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise RuntimeError("secret detail: employee E-1234 at 0912-345-678")

    server = grpc.aio.server(interceptors=[RuntimeInterceptor(Authenticator(Settings()))])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Broken", {"Call": grpc.unary_unary_rpc_method_handler(broken)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    labels = {"grpc_service": "test.Broken", "grpc_method": "Call"}
    before = REGISTRY.get_sample_value("eap_unexpected_errors_total", labels) or 0.0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Broken/Call")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(b"", metadata=(("x-request-id", "req-42"),))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == "internal error; correlation id req-42"
        assert REGISTRY.get_sample_value("eap_unexpected_errors_total", labels) == before + 1
        logged = [r for r in caplog.records if r.getMessage() == "unexpected error"]
        assert logged and logged[0].error_type == "RuntimeError"  # type: ignore[attr-defined]
        assert "E-1234" not in caplog.text and "0912" not in caplog.text
    finally:
        await server.stop(0)


async def test_an_unreachable_database_answers_unavailable() -> None:
    async def no_database(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    server = grpc.aio.server(interceptors=[RuntimeInterceptor(Authenticator(Settings()))])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "eap.test.v1.Down", {"Call": grpc.unary_unary_rpc_method_handler(no_database)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/eap.test.v1.Down/Call")(b"")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "5432" not in caught.value.details()
    finally:
        await server.stop(0)
