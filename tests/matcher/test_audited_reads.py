"""Every read of case or schedule data leaves an audit entry naming the
records read (FindSlots, ListSessions, ListGroupCandidates, as GetCase
already did), and a cancellation's free-text reason is kept sealed with
the booking: it reaches neither the quota ledger nor any audit trail."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.orm import BookingRow
from services.matcher.registry.directory import load_keys
from services.matcher.service import MatcherService
from services.runtime import database
from services.runtime.audit import AuditTrail
from tests.conftest import MONDAY, Backend, Suite, at
from tests.matcher.test_booking import book, case, slots, submit

REASON = "my divorce hearing moved to that morning"  # free text that names a circumstance


async def _reads(trail: AuditTrail, after: int) -> list[str]:
    return [e.record for e in await trail.entries(after, 1000) if e.action == "read"]


def _trail(suite: Suite) -> AuditTrail:
    assert suite.server is not None
    (matcher,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
    assert matcher.audit is not None
    return matcher.audit


async def _last(trail: AuditTrail) -> int:
    entries = await trail.entries(0, 100_000)
    return entries[-1].seq if entries else 0


async def test_reads_of_cases_and_sessions_name_the_records_read(suite: Suite) -> None:
    trail = _trail(suite)
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2", accepts_group=True))
    seen = await _last(trail)
    found = await slots(suite, "K1")
    assert await _reads(trail, seen) == ["cases K1"]

    booked = await book(suite, found[0])
    seen = await _last(trail)
    window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=14), 0)}
    await suite.matcher.ListSessions(
        pb.ListSessionsRequest(counselor_id=booked.counselor_id, **window)
    )
    assert await _reads(trail, seen) == ["cases K1"]

    seen = await _last(trail)
    candidates = await suite.matcher.ListGroupCandidates(
        pb.ListGroupCandidatesRequest(category=pb.CATEGORY_PSYCHOLOGICAL, **window)
    )
    assert {c.case_id for c in candidates.candidates} == {"K1", "K2"}
    assert await _reads(trail, seen) == ["cases K1,K2"]


async def test_many_records_read_are_named_over_several_entries(suite: Suite) -> None:
    """An entry's record holds 200 characters: a long list takes several."""
    trail = _trail(suite)
    ids = [f"K{n:03d}-{'x' * 40}" for n in range(12)]
    for n, case_id in enumerate(ids):
        await submit(suite, case(case_id, f"E{n}", accepts_group=True))
    seen = await _last(trail)
    window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=14), 0)}
    await suite.matcher.ListGroupCandidates(
        pb.ListGroupCandidatesRequest(category=pb.CATEGORY_PSYCHOLOGICAL, **window)
    )
    records = await _reads(trail, seen)
    assert len(records) > 1 and all(len(r) <= 200 for r in records)
    named = [i for r in records for i in r.removeprefix("cases ").split(",")]
    assert named == ids


async def test_a_cancellation_reason_stays_sealed_with_the_booking(
    suite: Suite, backend: Backend
) -> None:
    await submit(suite, case())
    booked = await book(suite, (await slots(suite))[0])
    await suite.matcher.CancelBooking(
        pb.CancelBookingRequest(booking_id=booked.booking_id, reason=REASON)
    )
    ledger = await suite.quota.ListLedger(qpb.ListLedgerRequest(page_size=1000))
    releases = [e for e in ledger.entries if e.kind == "RELEASE"]
    # Codes only (a cancellation this near the start is a late one).
    assert releases and {e.reason for e in releases} == {"LATE_CANCELLATION"}
    # Nowhere in either database in clear: ledger, audit trails, any table.
    for service in ("matcher", "quota"):
        engine = database.create_engine(backend.settings.database_url_for(service))
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda sync: sync.dialect.get_table_names(sync))
                for table in tables:
                    rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
                    assert not any(REASON in repr(row) for row in rows), table
                if service == "matcher":
                    sealed = await connection.scalar(
                        select(BookingRow.cancel_reason).where(
                            BookingRow.booking_id == booked.booking_id
                        )
                    )
        finally:
            await engine.dispose()
    # The booking keeps it, for those who may open it with the data keys.
    keys = load_keys(backend.settings.data_keys_file, development=True)
    assert sealed is not None and keys.decrypt(sealed).decode() == REASON
