"""Three `eapctl serve quota` replicas on one PostgreSQL database and one Redis,
hammered by concurrent clients: the books must balance and no limit may be
overrun, however the requests interleave.

The pool is seeded so that both limits bind in turn: first the agency budget
(NT$75,500: 37 one-hour sessions at NT$2,000 and NT$1,500 to spare), then,
after a top-up, the provider cap (2,700 minutes: 480 left after the first
round, room for five 90-minute sessions and 30 minutes to spare).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.runtime.status import retry_delay
from tests import county, replicas
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SERVICE = "eap.quota.v1.QuotaService"
REPLICAS = 3
CLIENTS = 54  # 18 in flight per replica

SESSION_NTD = 2_000  # 60 minutes at county.RATE
BUDGET = 37 * SESSION_NTD + 1_500  # not a multiple of the session cost
CAP_MINUTES = 45 * 60  # more than the budget allows at first, less than demand
TOP_UP = 60_000
SHORT_HOLDS = 9
TIMEOUT = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with replicas.cluster(
        tmp_path, ["quota"], REPLICAS, SERVICE, {"EAP_HOLD_SWEEP_SECONDS": "0.3"}
    ) as running:
        yield running


def _refusal(error: grpc.aio.AioRpcError) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The rule a FAILED_PRECONDITION names, in both its PreconditionFailure and
    its ErrorInfo, and what the ErrorInfo says is left."""
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == code_pb2.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    failure = error_details_pb2.PreconditionFailure()
    kinds = []
    for detail in status.details:
        for message in (info, failure):
            if detail.Is(message.DESCRIPTOR):
                detail.Unpack(message)
                kinds.append(type(message).__name__)
    assert sorted(kinds) == ["ErrorInfo", "PreconditionFailure"], kinds
    assert [v.type for v in failure.violations] == [info.reason], (failure, info)
    return info.reason, tuple(sorted(info.metadata.items()))


async def _balance(stub: quota_pb2_grpc.QuotaServiceAsyncStub, kind: int, owner: str) -> pb.Balance:
    answer = await stub.GetBalance(
        pb.GetBalanceRequest(account=county.account(kind, owner)), timeout=TIMEOUT
    )
    return answer.balance


async def _reserve_all(
    stubs: Sequence[quota_pb2_grpc.QuotaServiceAsyncStub], requests: list[pb.ReserveRequest]
) -> list[pb.ReserveResponse | grpc.aio.AioRpcError]:
    """Sends every request at once, spread over the replicas, and gathers the
    answers or the refusals in request order. Like any well-behaved client, a
    request the quota sheds as busy (RESOURCE_EXHAUSTED: its queue would outlast
    the call) is sent again, same idempotency key, after the wait its RetryInfo
    asks for: on a loaded machine the burst is shed in part, and the books must
    balance all the same."""

    async def one(n: int, request: pb.ReserveRequest) -> pb.ReserveResponse | grpc.aio.AioRpcError:
        give_up = time.monotonic() + TIMEOUT
        while True:
            try:
                return await stubs[n % len(stubs)].Reserve(request, timeout=TIMEOUT)
            except grpc.aio.AioRpcError as error:
                delay = retry_delay(error)
                busy = error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                if not busy or delay is None or time.monotonic() + delay > give_up:
                    return error
                await asyncio.sleep(delay)

    return await asyncio.gather(*(one(n, r) for n, r in enumerate(requests)))


def _split(
    answers: list[pb.ReserveResponse | grpc.aio.AioRpcError],
) -> tuple[list[pb.ReserveResponse], list[tuple[str, tuple[tuple[str, str], ...]]]]:
    won = [a for a in answers if isinstance(a, pb.ReserveResponse)]
    refused = [_refusal(a) for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    return won, refused


async def _sql(url: str, query: str, *args: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as connection:
        cursor = await connection.execute(query, args)
        return await cursor.fetchall()


def _within(balance: pb.Balance) -> None:
    assert min(balance.held, balance.spent, balance.left) >= 0, balance
    assert balance.held + balance.spent <= balance.entitled, balance
    assert balance.left == balance.entitled - balance.held - balance.spent, balance


async def test_replicas_share_one_pool_without_overrunning_it(cluster: Cluster) -> None:
    run = uuid.uuid4().hex[:8]  # idempotency keys unique to this run
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    stubs = [quota_pb2_grpc.QuotaServiceStub(c) for c in channels]
    agency = (pb.ACCOUNT_KIND_AGENCY, "PT-HR")
    provider = (pb.ACCOUNT_KIND_PROVIDER, "P1")
    try:
        await county.seed(stubs[0], budget=BUDGET, cap_minutes=CAP_MINUTES)

        # -- short holds come back by themselves ---------------------------
        answers = await _reserve_all(
            stubs,
            [
                county.reserve_request(f"{run}-short-{n}", employee=f"X{n:02d}", n_week=20, ttl=1)
                for n in range(SHORT_HOLDS)
            ],
        )
        won, refused = _split(answers)
        assert (len(won), refused) == (SHORT_HOLDS, [])
        assert {a.hold.state for a in won} == {pb.HOLD_STATE_HELD}
        deadline = time.monotonic() + 15
        while (await _balance(stubs[2], *agency)).held > 0:
            assert time.monotonic() < deadline, "the sweepers never gave the short holds back"
            await asyncio.sleep(0.2)
        for kind, owner in (agency, provider):
            balance = await _balance(stubs[0], kind, owner)
            assert (balance.held, balance.spent) == (0, 0), balance
        entries = (
            await stubs[0].ListLedger(
                pb.ListLedgerRequest(account=county.account(*agency), page_size=1000),
                timeout=TIMEOUT,
            )
        ).entries
        expired = [e for e in entries if e.kind == "EXPIRE"]
        assert sorted(e.reference for e in expired) == sorted(a.hold.hold_id for a in won)
        assert sum(e.delta_held for e in expired) == -SHORT_HOLDS * SESSION_NTD
        # However the replicas took turns at sweeping, each hold expired exactly once.
        per_hold = await _sql(
            cluster.database_url,
            "SELECT reference, count(*) FROM quota_ledger WHERE kind = 'EXPIRE' GROUP BY reference",
        )
        assert sorted(per_hold) == sorted((a.hold.hold_id, 3) for a in won)
        states = await _sql(
            cluster.database_url,
            "SELECT state, count(*) FROM quota_holds WHERE employee_id LIKE 'X%%' GROUP BY state",
        )
        assert states == [("expired", SHORT_HOLDS)]

        # -- round 1: the agency budget binds -------------------------------
        answers = await _reserve_all(
            stubs,
            [
                county.reserve_request(f"{run}-r1-{n}", employee=f"E{n:03d}", n_week=10)
                for n in range(CLIENTS)
            ],
        )
        round1, refused = _split(answers)
        allowed = min(CLIENTS, BUDGET // SESSION_NTD, CAP_MINUTES // 60)
        assert allowed == BUDGET // SESSION_NTD == 37  # the agency is the tighter limit
        assert len(round1) == allowed
        # Every refusal came when the pool was down to its odd NT$1,500.
        shortfall = (("left_ntd", "1500"), ("needed_ntd", "2000"))
        assert Counter(refused) == {("AGENCY_BUDGET", shortfall): CLIENTS - allowed}
        assert len({a.hold.hold_id for a in round1}) == allowed
        pool = await _balance(stubs[0], *agency)
        _within(pool)
        assert (pool.held, pool.spent, pool.left) == (allowed * SESSION_NTD, 0, 1_500)
        cap = await _balance(stubs[1], *provider)
        _within(cap)
        assert cap.held == allowed * 60

        # Confirm every booking, each twice on different replicas at once
        # (at most CLIENTS calls in flight: PostgreSQL allows 100 connections).
        in_flight = asyncio.Semaphore(CLIENTS)

        async def confirm(n: int, hold_id: str) -> pb.CommitResponse:
            async with in_flight:
                return await stubs[n % REPLICAS].Commit(
                    pb.CommitRequest(hold_id=hold_id), timeout=TIMEOUT
                )

        commits = await asyncio.gather(
            *(confirm(n + shift, a.hold.hold_id) for n, a in enumerate(round1) for shift in (0, 1))
        )
        assert {c.hold.state for c in commits} == {pb.HOLD_STATE_BOOKED}
        pool = await _balance(stubs[2], *agency)
        assert (pool.held, pool.spent) == (0, allowed * SESSION_NTD)

        # -- round 2: after a top-up, the provider cap binds ----------------
        await stubs[1].TopUpBudget(
            pb.TopUpBudgetRequest(
                idempotency_key=f"{run}-topup",
                agency_id="PT-HR",
                fiscal_year=county.YEAR,
                amount_ntd=TOP_UP,
                reason="mid-year top-up",
            ),
            timeout=TIMEOUT,
        )
        cap_left = CAP_MINUTES - allowed * 60
        answers = await _reserve_all(
            stubs,
            [
                county.reserve_request(f"{run}-r2-{n}", employee=f"E{n:03d}", n_week=11, minutes=90)
                for n in range(CLIENTS)
            ],
        )
        round2, refused = _split(answers)
        allowed2 = min(CLIENTS, cap_left // 90, (BUDGET + TOP_UP) // 3_000 - allowed)
        assert allowed2 == cap_left // 90 == 5  # now the provider is the tighter limit
        assert len(round2) == allowed2
        shortfall = (("left_minutes", str(cap_left % 90)), ("needed_minutes", "90"))
        assert Counter(refused) == {("PROVIDER_CAP", shortfall): CLIENTS - allowed2}
        cap = await _balance(stubs[0], *provider)
        _within(cap)
        assert (cap.held, cap.spent, cap.left) == (allowed2 * 90, allowed * 60, cap_left % 90)
        pool = await _balance(stubs[1], *agency)
        _within(pool)
        assert (pool.held, pool.spent) == (allowed2 * 3_000, allowed * SESSION_NTD)

        # -- retries with one idempotency key, on every replica at once ------
        # Employees with an open account (they booked in round 1) and new ones.
        booked = sorted(
            str(row[0])
            for row in await _sql(
                cluster.database_url,
                "SELECT employee_id FROM quota_holds WHERE state = 'booked'",
            )
        )
        employees = [*booked[:6], "N00", "N01", "N02"]
        requests = [
            county.reserve_request(
                f"{run}-retry-{employee}",
                employee=employee,
                n_week=30,
                agency="PT-EDU",
                provider="P2",
            )
            for employee in employees
        ]
        copies = 2 * REPLICAS
        answers = await _reserve_all(stubs, [r for r in requests for _ in range(copies)])
        failures = [
            (n // copies, a.code(), a.details())
            for n, a in enumerate(answers)
            if isinstance(a, grpc.aio.AioRpcError)
        ]
        assert failures == []
        for n in range(len(requests)):
            same_key = answers[n * copies : (n + 1) * copies]
            assert len({a.hold.hold_id for a in same_key}) == 1  # type: ignore[union-attr]
        rows = await _sql(
            cluster.database_url,
            "SELECT employee_id, count(*) FROM quota_holds WHERE agency_id = 'PT-EDU' "
            "GROUP BY employee_id",
        )
        assert sorted(rows) == sorted((e, 1) for e in employees)
        edu = await _balance(stubs[2], pb.ACCOUNT_KIND_AGENCY, "PT-EDU")
        assert edu.held == len(employees) * SESSION_NTD
        assert (await _balance(stubs[0], pb.ACCOUNT_KIND_PROVIDER, "P2")).held == len(
            employees
        ) * 60

        # -- no account anywhere is overdrawn -------------------------------
        edu_provider = (pb.ACCOUNT_KIND_PROVIDER, "P2")
        for kind, owner in (agency, provider, (pb.ACCOUNT_KIND_AGENCY, "PT-EDU"), edu_provider):
            _within(await _balance(stubs[0], kind, owner))
        overdrawn = await _sql(
            cluster.database_url,
            "SELECT kind, owner_id FROM quota_accounts "
            "WHERE held < 0 OR spent < 0 OR held + spent > entitled",
        )
        assert overdrawn == []
    finally:
        for channel in channels:
            await channel.close(None)

    verify = await asyncio.create_subprocess_exec(
        replicas.EAPCTL,
        "quota",
        "verify",
        env=cluster.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, output.decode()

    # -- graceful shutdown: SIGTERM, exit 0 within a few seconds ---------------
    for replica in cluster.replicas:
        replica.process.send_signal(signal.SIGTERM)
    for replica in cluster.replicas:
        code = await asyncio.to_thread(replica.process.wait, 8)
        assert code == 0, cluster.logs()
