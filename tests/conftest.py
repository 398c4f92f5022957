from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.notifier.service import NotifierService
from services.quota.service import QuotaService
from services.runtime import clock
from services.runtime.config import Settings
from services.runtime.server import RunningServer, Service, start
from tests import stores, watchdog
from tests.access import AsAdmin, Secured, bearer, make_keys, secured
from tests.county import counselor, enrol, seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Set-up, call and teardown (the event loop's closing too) under the watchdog."""
    capture = item.config.pluginmanager.getplugin("capturemanager")
    with watchdog.watching(item.nodeid, capture):
        yield


class StuckBackgroundTask(UserWarning):
    pass


@pytest.fixture(autouse=True)
def _report_stuck_background_tasks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A server's background loop that ignored its cancellation for
    BACKGROUND_STOP_SECONDS at the server's stop becomes a warning in the
    run's summary, with its stack: the test may pass, only slower, and
    pytest shows a passing test's logs nowhere else."""
    yield
    for when in ("call", "teardown"):
        for record in caplog.get_records(when):
            if record.getMessage() == "background task did not stop":
                task, stack = getattr(record, "task", "?"), getattr(record, "stack", "")
                warnings.warn(f"{task} did not stop:\n{stack}", StuckBackgroundTask, 1)


@dataclass
class Backend:
    name: str
    settings: Settings


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The embedded default (SQLite, no Redis) and production (PostgreSQL + Redis)."""
    base = Settings(grpc_address="127.0.0.1:0", metrics_port=0, hold_sweep_seconds=0.2)
    if request.param == "sqlite":
        url = stores.migrated_sqlite(tmp_path / "eap.db")
        yield Backend("sqlite", replace(base, database_url=url))
        return
    with stores.fresh_postgres_database() as url:
        redis_url = stores.redis_url()
        redis.Redis.from_url(redis_url).flushdb()
        yield Backend("postgres", replace(base, database_url=url, redis_url=redis_url))


@dataclass
class QuotaClient:
    server: RunningServer
    channel: grpc.aio.Channel
    stub: quota_pb2_grpc.QuotaServiceStub
    service: QuotaService


@pytest.fixture
async def quota(backend: Backend) -> AsyncIterator[QuotaClient]:
    service = QuotaService()
    server = await start([service], backend.settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield QuotaClient(server, channel, quota_pb2_grpc.QuotaServiceStub(channel), service)
    finally:
        await channel.close()
        await server.stop(0.5)


TAIPEI = dt.timezone(dt.timedelta(hours=8))
MONDAY = dt.date(2027, 3, 8)  # ISO week 10; an office day (1 March is a holiday)


def at(day: dt.date, hour: int, minute: int = 0) -> Timestamp:
    """A moment on `day` in Taipei."""
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=TAIPEI))
    return stamp


@dataclass
class Suite:
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub
    quota: quota_pb2_grpc.QuotaServiceAsyncStub
    server: RunningServer | None = None  # the in-process server, where there is one
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub | None = None  # where it runs too


@contextmanager
def during(start: Timestamp, minutes: int = 5) -> Iterator[None]:
    """The services' clock `minutes` past `start`, a session's start: a
    session can be completed once it has begun."""
    with clock.moved_to(start.ToDatetime(tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)):
        yield


@pytest.fixture
def march_2027() -> Iterator[None]:
    with clock.moved_to(dt.datetime(2027, 3, 8, 8, tzinfo=TAIPEI)):
        yield


@asynccontextmanager
async def _running(backend: Backend, services: list[Service]) -> AsyncIterator[Suite]:
    server = await start(services, backend.settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        suite = Suite(
            matcher_pb2_grpc.MatcherServiceStub(channel),  # type: ignore[arg-type]
            quota_pb2_grpc.QuotaServiceStub(channel),  # type: ignore[arg-type]
            server,
            calendar_pb2_grpc.CalendarServiceStub(channel),  # type: ignore[arg-type]
        )
        await seed(suite.quota)
        await enrol(suite.matcher)
        await suite.matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor()))
        await suite.matcher.UpsertCounselor(
            mpb.UpsertCounselorRequest(counselor=counselor("C002", provider="P2"))
        )
        yield suite
    await server.stop(0)


@pytest.fixture
async def suite(backend: Backend, march_2027: None) -> AsyncIterator[Suite]:
    """Quota and matcher in one server (as `eapctl serve all`), the test
    county seeded, two counselors registered, the clock at MONDAY 08:00."""
    async with _running(backend, [QuotaService(), MatcherService()]) as suite:
        yield suite


@pytest.fixture
async def suite_with_calendar(backend: Backend, march_2027: None) -> AsyncIterator[Suite]:
    """`suite`, with the calendar service in the same server."""
    services = [QuotaService(), MatcherService(), CalendarService(), NotifierService()]
    async with _running(backend, services) as suite:
        yield suite


@pytest.fixture
async def secured_suite(tmp_path: Path, march_2027: None) -> AsyncIterator[Secured]:
    """The services in `jwt` mode on SQLite (the policy does not
    depend on the store), seeded by an administrator."""
    made = make_keys(tmp_path / "keys")
    url = stores.migrated_sqlite(tmp_path / "eap.db")
    await stores.sign_audit_heads(url, made.audit)  # as if migrated under the suite's key
    settings = Settings(grpc_address="127.0.0.1:0", metrics_port=0, database_url=url)
    server = await start(
        [QuotaService(), MatcherService(), CalendarService(), NotifierService()],
        secured(settings, made),
    )
    address = f"127.0.0.1:{server.port}"
    admin = bearer(made.token("admin", "eap-admin"))
    async with grpc.aio.insecure_channel(address, interceptors=[AsAdmin(admin)]) as setup:
        await seed(quota_pb2_grpc.QuotaServiceStub(setup))
        matcher = matcher_pb2_grpc.MatcherServiceStub(setup)
        await enrol(matcher)
        await matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor()))
        await matcher.UpsertCounselor(
            mpb.UpsertCounselorRequest(counselor=counselor("C002", provider="P2"))
        )
    async with grpc.aio.insecure_channel(address) as channel:
        yield Secured(made, server, channel)
    await server.stop(0)
