"""The shared runtime: reflection, health, metrics, auth, request ids, shutdown."""

from __future__ import annotations

import asyncio
import logging
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
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli import registry
from services.quota.service import QuotaService
from services.runtime import deadline as call_deadline
from services.runtime import keys, policy
from services.runtime.auth import Authenticator, Identity, Role
from services.runtime.config import Settings
from services.runtime.errors import ConfigError, ResourceExhausted, Unauthenticated
from services.runtime.interceptor import RuntimeInterceptor
from services.runtime.logs import JsonFormatter
from services.runtime.rate_limit import WINDOW_SECONDS
from services.runtime.server import start
from services.runtime.service_identity import ServiceCredentials
from services.runtime.status import from_call, to_status
from tests.access import IDP, bearer, make_keys, secured
from tests.conftest import Backend, QuotaClient
from tests.county import reserve_request, seed


@pytest.fixture(autouse=True)
def test_services_in_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handlers these tests register are open to the development
    identity, as if the policy table had rows for them."""
    for method in ("test.Slow/Call", "test.Broken/Call", "eap.test.v1.Down/Call"):
        monkeypatch.setitem(policy.POLICY, method, policy.Access({Role.ADMIN: policy.Scope.ANY}))


def settings(tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        grpc_address="127.0.0.1:0", metrics_port=0, database_url=f"sqlite:///{tmp_path}/eap.db"
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


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
    assert 'eap_store_up{service="quota",store="database",tenant="default"} 1.0' in body
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
    made = make_keys(tmp_path / "keys")
    server = await start([QuotaService()], secured(settings(tmp_path), made))
    admin = made.token("admin", "hr-admin-1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = quota_pb2_grpc.QuotaServiceStub(channel)
            hs256 = jwt.encode(
                {"sub": "x", "role": "admin", "iss": "eap", "aud": "eap-suite", "exp": 2**40},
                "a-shared-secret-that-is-long-enough-for-hs256",
                algorithm="HS256",
                headers={"kid": IDP},
            )
            for metadata in (
                (),
                bearer("nonsense"),
                (("authorization", f"Basic {admin}"),),
                bearer(made.token("admin", "a", exp=int(time.time()) - 10)),
                bearer(made.token("admin", "a", aud="other")),
                bearer(made.token("admin", "a", iss="someone-else")),
                bearer(made.token("king", "a")),
                bearer(made.token("admin", "a", kid="stranger")),  # an untrusted key
                bearer(made.token("admin", "a", signer="stranger")),  # a forged signature
                bearer(hs256),  # symmetric algorithms are not accepted
                # A service key speaks only for its own service, and for no user.
                bearer(made.token("service", "calendar", kid="service-matcher")),
                bearer(made.token("admin", "a", kid="service-matcher")),
                bearer(made.token("service", "matcher")),  # a service token from the IdP key
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Ping(pb.PingRequest(), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            good = bearer(admin)
            await stub.Ping(pb.PingRequest(), metadata=good)
            await stub.UpsertAgency(
                pb.UpsertAgencyRequest(agency_id="A", organisation="o", display_name="A"),
                metadata=good,
            )
            entries = await stub.ListLedger(pb.ListLedgerRequest(), metadata=good)
            assert entries.entries == []
            await stub.Ping(
                pb.PingRequest(),
                metadata=bearer(made.token("service", "matcher", kid="service-matcher")),
            )
            # Health needs no token: kubelet probes it.
            health = health_pb2_grpc.HealthStub(channel)
            await health.Check(health_pb2.HealthCheckRequest())
    finally:
        await server.stop(0)


async def test_keys_rotate_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key added to the trusted directory is honoured, and one removed is
    not, once the ring reads the directory again."""
    made = make_keys(tmp_path / "keys")
    authenticator = Authenticator(secured(settings(tmp_path), made))
    keys.generate(made.private, "idp-2028")
    newer = made.token("admin", "a", kid="idp-2028")
    with pytest.raises(Unauthenticated):
        authenticator.identify(bearer(newer))
    (made.private / "idp-2028.pem").rename(made.trusted / "idp-2028.pem")
    (made.trusted / f"{IDP}.pem").unlink()
    monkeypatch.setattr(keys, "REREAD_SECONDS", 0.0)
    assert authenticator.identify(bearer(newer)).subject == "a"
    with pytest.raises(Unauthenticated):
        authenticator.identify(bearer(made.token("admin", "a")))


async def test_request_id_travels_back(quota: QuotaClient) -> None:
    call = quota.stub.Ping(pb.PingRequest(), metadata=(("x-request-id", "abc-123"),))
    await call
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())


async def test_deadline_stops_the_handler() -> None:
    """A handler still working when the caller's deadline passes is stopped,
    so a stuck call does not hold a database connection past its use; and
    the handler's code can read how long it has left."""
    stopped = asyncio.Event()
    seen: list[float | None] = []

    async def slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append(call_deadline.remaining())
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
            (left,) = seen
            # The timeout travels in a header rounded up to its unit, and the
            # server's clock starts it on arrival: a hair over 0.3 s is seen.
            assert left is not None and 0 < left <= 0.31
    finally:
        await server.stop(0)


def test_a_busy_service_passes_its_retry_hint_on() -> None:
    """What another service refuses as too busy reaches our caller as
    RESOURCE_EXHAUSTED with the same delay, not as an outage."""
    refusal = to_status(ResourceExhausted("the queue is long", 2.5))
    error = grpc.aio.AioRpcError(
        refusal.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*refusal.trailing_metadata),
        refusal.details,
    )
    passed_on = from_call(error, "quota")
    assert isinstance(passed_on, ResourceExhausted)
    assert passed_on.retry_seconds == 2.5
    assert "quota" in passed_on.message


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


def test_a_service_signs_with_its_newest_key_and_speaks_only_for_itself(tmp_path: Path) -> None:
    made = make_keys(tmp_path / "keys")
    keys.generate(made.services, "service-matcher.2028")
    (made.services / "service-matcher.2028.pem").rename(made.trusted / "service-matcher.2028.pem")
    config = secured(settings(tmp_path), made)
    (metadata,) = ServiceCredentials("matcher", config).metadata()
    token = metadata[1].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["kid"] == "service-matcher.2028"
    assert Authenticator(config).identify((metadata,)) == Identity(
        "matcher", Role.SERVICE, "default"
    )
    with pytest.raises(ConfigError):
        ServiceCredentials("quota", config)  # jwt mode, and no key of its own


async def test_a_caller_over_its_rate_limit_is_told_to_wait(backend: Backend) -> None:
    """Two replicas on one Redis hold a caller to one budget (with SQLite and
    no Redis, each replica counts alone); other callers are not held up."""
    limited = replace(backend.settings, rate_limit_per_second=1)  # 10 calls per 10 s
    first = await start([QuotaService()], limited)
    second = await start([QuotaService()], limited) if backend.settings.redis_url else first
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as one,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as two,
        ):
            stubs = [quota_pb2_grpc.QuotaServiceStub(c) for c in (one, two)]
            if time.time() % WINDOW_SECONDS > WINDOW_SECONDS - 2:
                await asyncio.sleep(2)  # all 14 calls in one window
            codes = []
            for n in range(14):
                try:
                    await stubs[n % 2].Ping(pb.PingRequest())
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    refusal = error
            assert codes == [grpc.StatusCode.OK] * 10 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
            status = rpc_status.from_call(refusal)  # type: ignore[arg-type]
            assert status is not None
            assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
            health = health_pb2_grpc.HealthStub(one)
            await health.Check(health_pb2.HealthCheckRequest())  # health is never limited
    finally:
        await first.stop(0)
        if second is not first:
            await second.stop(0)


def test_logged_exceptions_keep_their_type_and_stack_not_their_message() -> None:
    formatter = JsonFormatter()
    who = "-".join(("emp", "2b7e"))  # not in the source lines the stack quotes
    try:
        raise ValueError(f"duplicate key (employee_id)=({who})")
    except ValueError:
        record = logging.getLogger("eap.test").makeRecord(
            "eap.test", logging.WARNING, __file__, 1, "upkeep failed", (), sys.exc_info()
        )
    line = formatter.format(record)
    assert "ValueError" in line and "test_runtime.py" in line
    assert "emp-2b7e" not in line
