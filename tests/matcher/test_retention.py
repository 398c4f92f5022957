"""Retention: case details past their time are purged; the quota's
pseudonymous amounts and the audit trail stay."""

from __future__ import annotations

import datetime as dt

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher import retention
from services.matcher.notices.rows import NoticeRow
from services.runtime import clock
from tests.conftest import MONDAY, TAIPEI, Suite
from tests.county import RATE, account
from tests.matcher.test_booking import book, case, slots, span, submit
from tests.quota.test_rpcs import refused
from tests.runtime.test_audit import trail_of


async def test_old_cases_are_purged_and_the_aggregates_stay(suite: Suite) -> None:
    next_monday = MONDAY + dt.timedelta(weeks=1)
    await submit(suite, case("K1", "E1"))
    await book(suite, (await slots(suite, "K1"))[0], "K1")  # Monday 09:00
    await submit(suite, case("K2", "E2", availability=[span(next_monday, 9, 17)]))
    await book(suite, (await slots(suite, "K2"))[0], "K2")  # a week later
    await submit(suite, case("K3", "E3"))  # never booked
    trail = trail_of(suite, "matcher")
    assert suite.server is not None
    (matcher,) = [s for s in suite.server.services if s.name == "matcher"]

    with clock.moved_to(dt.datetime(2027, 3, 20, 8, tzinfo=TAIPEI)):
        purged = await retention.purge(matcher.engine, trail, days=10)  # before 10 March
    assert purged == (2, 0)
    for gone in ("K1", "K3"):
        error = await refused(suite.matcher.GetCase(mpb.GetCaseRequest(case_id=gone)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    kept = await suite.matcher.GetCase(mpb.GetCaseRequest(case_id="K2"))
    assert len(kept.bookings) == 1
    # Who was told of the purged sessions goes with them; the kept one's stays.
    async with async_sessionmaker(matcher.engine)() as session:
        told = set(await session.scalars(select(NoticeRow.booking_id)))
    assert told == {kept.bookings[0].booking_id}

    # What the programme spent is still there, anonymous and whole.
    agency = await suite.quota.GetBalance(
        qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    )
    assert agency.balance.spent == 2 * RATE
    # The purge is in the audit trail, with how many and never which.
    purges = [
        (e.action, e.record, e.role) for e in await trail.entries(0, 1000) if e.action == "purge"
    ]
    assert purges == [("purge", "cases/2 match-jobs/0 older than 10 days", "service")]
    assert await trail.verify() == []
