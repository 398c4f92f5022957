"""Optimized matching as jobs over gRPC: submit, watch, result, apply; what-if
runs; and jobs whose replica died are taken up again, not lost.

Same county as the booking tests (clock at Monday 8 March 2027, 08:00)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.orm import JobRow
from services.runtime import clock
from services.runtime.database import create_engine
from tests.conftest import MONDAY, Backend, Suite, at
from tests.county import RATE
from tests.matcher.test_booking import (
    agency,
    case,
    rule,
    span,
    submit,
)
from tests.quota.test_rpcs import refused

WEDNESDAY = MONDAY + dt.timedelta(days=2)
NEXT_MONDAY = MONDAY + dt.timedelta(weeks=1)


async def county_cases(suite: Suite) -> None:
    await submit(suite, case("K1", "E1", sessions_wanted=2))
    # Crisis: 72 hours from Monday 08:00 end on Thursday 08:00. Wednesday
    # evening is inside; the next Monday is not.
    await submit(
        suite,
        case(
            "K2",
            "E2",
            kind=pb.CASE_KIND_CRISIS,
            sessions_wanted=1,
            availability=[span(WEDNESDAY, 18, 21), span(NEXT_MONDAY, 9, 12)],
        ),
    )
    await submit(suite, case("K3", "E3", category=pb.CATEGORY_LEGAL, sessions_wanted=1))


async def run_job(suite: Suite, **fields: object) -> pb.MatchJob:
    request = pb.SubmitMatchJobRequest(
        horizon_start=at(MONDAY, 0), weeks=2, time_limit_seconds=2, **fields
    )
    job = (await suite.matcher.SubmitMatchJob(request)).job
    assert job.state == pb.MATCH_JOB_STATE_QUEUED
    seen = []
    async for update in suite.matcher.WatchMatchJob(pb.WatchMatchJobRequest(job_id=job.job_id)):
        seen.append(update.job)
    assert seen[-1].state == pb.MATCH_JOB_STATE_DONE, seen[-1].error
    return seen[-1]


@pytest.fixture
async def jobs_suite(suite: Suite) -> AsyncIterator[Suite]:
    await county_cases(suite)
    yield suite


async def test_a_job_runs_streams_and_explains(jobs_suite: Suite) -> None:
    suite = jobs_suite
    done = {"state": "done"}
    before = REGISTRY.get_sample_value("eap_matcher_match_jobs_total", done) or 0
    job = await run_job(suite)
    for _ in range(50):  # the runner counts the job just after marking it done
        if REGISTRY.get_sample_value("eap_matcher_match_jobs_total", done) == before + 1:
            break
        await asyncio.sleep(0.1)
    assert REGISTRY.get_sample_value("eap_matcher_match_jobs_total", done) == before + 1
    assert (REGISTRY.get_sample_value("eap_matcher_match_solve_seconds_count") or 0) >= 1
    assert job.best_score > 0 and job.bound >= job.best_score and job.attempts == 1
    result = await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))
    by_case: dict[str, list[pb.ProposedSession]] = {}
    for session in result.sessions:
        by_case.setdefault(session.case_id, []).append(session)
    assert len(by_case["K1"]) == 2
    # The crisis case is seen inside its deadline: Wednesday evening.
    (crisis,) = by_case["K2"]
    start = crisis.start.ToDatetime(tzinfo=dt.UTC)
    assert start < dt.datetime(2027, 3, 11, 8, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert result.crisis_sessions == 1
    assert [(u.case_id, u.reason) for u in result.unserved] == [("K3", "NO_QUALIFIED_COUNSELOR")]
    assert result.unserved[0].explanation


async def test_apply_books_what_the_dry_run_promised(jobs_suite: Suite) -> None:
    suite = jobs_suite
    job = await run_job(suite)
    proposed = await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))
    dry = await suite.matcher.ApplyMatchResult(
        pb.ApplyMatchResultRequest(job_id=job.job_id, dry_run=True)
    )
    assert len(dry.booked) == len(proposed.sessions) and not dry.booking_ids
    assert (await agency(suite)).spent == 0  # a dry run changes nothing
    applied = await suite.matcher.ApplyMatchResult(pb.ApplyMatchResultRequest(job_id=job.job_id))
    assert len(applied.booking_ids) == len(proposed.sessions) and not applied.not_booked
    assert (await agency(suite)).spent == RATE * len(proposed.sessions)
    again = await refused(
        suite.matcher.ApplyMatchResult(pb.ApplyMatchResultRequest(job_id=job.job_id))
    )
    assert rule(again) == "JOB_APPLIED"


async def test_apply_reports_what_no_longer_fits(jobs_suite: Suite) -> None:
    suite = jobs_suite
    job = await run_job(suite)
    result = await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))
    taken = result.sessions[0]
    # Someone books the first proposed slot online before HR applies.
    await submit(suite, case("K9", "E9", sessions_wanted=1))
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(case_id="K9", counselor_id=taken.counselor_id, start=taken.start)
    )
    await suite.matcher.ConfirmBooking(pb.ConfirmBookingRequest(booking_id=held.booking.booking_id))
    applied = await suite.matcher.ApplyMatchResult(pb.ApplyMatchResultRequest(job_id=job.job_id))
    assert [n.rule for n in applied.not_booked] == ["SLOT_TAKEN"]
    assert len(applied.booked) == len(result.sessions) - 1


async def test_what_if_more_budget(suite: Suite) -> None:
    # PT-HR can pay for one session; three cases want one each.
    await suite.quota.TransferBudget(
        qpb.TransferBudgetRequest(
            idempotency_key="shrink",
            from_agency_id="PT-HR",
            to_agency_id="PT-EDU",
            fiscal_year=2027,
            amount_ntd=100_000 - RATE,
            reason="what-if test",
        )
    )
    for n in range(3):
        await submit(suite, case(f"W{n}", f"E{n}", sessions_wanted=1))
    job = await run_job(suite, what_if=[pb.BudgetChange(agency_id="PT-HR", extra_ntd=2 * RATE)])
    result = await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))
    assert result.sessions_without_what_if == 1
    assert len(result.sessions) == 3


async def test_bad_job_requests(jobs_suite: Suite) -> None:
    matcher = jobs_suite.matcher
    for request, code in [
        (pb.SubmitMatchJobRequest(weeks=2), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.SubmitMatchJobRequest(horizon_start=at(MONDAY, 0), weeks=0),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.SubmitMatchJobRequest(
                horizon_start=at(MONDAY, 0), weeks=2, time_limit_seconds=100_000
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.SubmitMatchJobRequest(horizon_start=at(dt.date(2027, 12, 20), 0), weeks=4),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.SubmitMatchJobRequest(horizon_start=at(MONDAY, 0), weeks=2, case_ids=["nope"]),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]:
        assert (await refused(matcher.SubmitMatchJob(request))).code() == code, request
    unknown = await refused(matcher.GetMatchResult(pb.GetMatchResultRequest(job_id="nope")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    slow = await matcher.SubmitMatchJob(
        pb.SubmitMatchJobRequest(horizon_start=at(MONDAY, 0), weeks=2, time_limit_seconds=4)
    )
    early = await refused(matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=slow.job.job_id)))
    assert rule(early) == "JOB_NOT_DONE"


async def _stale_copy(backend: Backend, job_id: str, new_id: str, attempts: int) -> str:
    """A copy of a finished job, as if a replica had died running it."""
    engine = create_engine(backend.settings.database_url_for("matcher"))
    try:
        async with engine.begin() as connection:
            row = (await connection.execute(select(JobRow).where(JobRow.job_id == job_id))).one()
            copy = dict(row._mapping)
            copy.update(
                job_id=new_id,
                state="running",
                result=None,
                worker="a-replica-that-died",
                heartbeat_at=clock.now() - dt.timedelta(minutes=5),
                attempts=attempts,
            )
            await connection.execute(JobRow.__table__.insert(), [copy])
    finally:
        await engine.dispose()
    return str(copy["job_id"])


async def test_a_job_whose_replica_died_is_run_again(jobs_suite: Suite, backend: Backend) -> None:
    finished = await run_job(jobs_suite)
    orphan = await _stale_copy(backend, finished.job_id, "orphan", attempts=1)
    final = None
    async for update in jobs_suite.matcher.WatchMatchJob(pb.WatchMatchJobRequest(job_id=orphan)):
        final = update.job
    assert final is not None and final.state == pb.MATCH_JOB_STATE_DONE
    assert final.attempts == 2
    # One that keeps killing its replicas is given up on, with the reason.
    doomed = await _stale_copy(backend, finished.job_id, "doomed", attempts=3)
    final = None
    watch = jobs_suite.matcher.WatchMatchJob(pb.WatchMatchJobRequest(job_id=doomed))
    async for update in watch:
        final = update.job
    assert final is not None and final.state == pb.MATCH_JOB_STATE_FAILED
    assert "stopped 3 times" in final.error
