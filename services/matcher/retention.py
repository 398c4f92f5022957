"""Retention: case details are kept for a set time after their last
session, then deleted.

A case is purged when it was submitted more than `days` ago and none of its
bookings ends later than that; its bookings go with it, and so do match
jobs older than that (their snapshots and results name cases). What stays:
the quota ledger's pseudonymous accounts and amounts, which the usage
summaries are made of, and the audit trail, which records the purge itself
(how many, never which).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.waitlist_rows import WaitlistRow
from services.matcher.notices.rows import NoticeRow
from services.matcher.orm import BookingRow, CaseRow, JobRow
from services.matcher.survey import state as survey_state
from services.runtime import clock
from services.runtime.audit import AuditTrail
from services.runtime.auth import SYSTEM_IDENTITY, set_identity

BATCH = 500


async def purge(engine: AsyncEngine, audit: AuditTrail | None, days: int) -> tuple[int, int]:
    """Deletes what is older than `days`; (cases, match jobs) deleted."""
    if days <= 0:
        return 0, 0
    cutoff = clock.now() - timedelta(days=days)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    recent = exists().where(BookingRow.case_id == CaseRow.case_id, BookingRow.end > cutoff)
    cases = jobs = 0
    while True:
        async with sessions() as session, session.begin():
            ids = list(
                await session.scalars(
                    select(CaseRow.case_id)
                    .where(CaseRow.submitted_at < cutoff, ~recent)
                    .limit(BATCH)
                )
            )
            if not ids:
                break
            booked = select(BookingRow.booking_id).where(BookingRow.case_id.in_(ids))
            await session.execute(delete(NoticeRow).where(NoticeRow.booking_id.in_(booked)))
            await session.execute(delete(BookingRow).where(BookingRow.case_id.in_(ids)))
            # Its places on the waitlist are case history too.
            await session.execute(delete(WaitlistRow).where(WaitlistRow.case_id.in_(ids)))
            await session.execute(delete(CaseRow).where(CaseRow.case_id.in_(ids)))
        cases += len(ids)
    async with sessions() as session, session.begin():
        result = await session.execute(
            delete(JobRow).where(JobRow.created_at < cutoff, JobRow.state.in_(("done", "failed")))
        )
        jobs = int(getattr(result, "rowcount", 0) or 0)
        await session.execute(delete(NoticeRow).where(NoticeRow.start < cutoff))
        # Survey links past their expiry are no more than unknown tokens
        # (the answers stay: they name nobody).
        await survey_state.forget_expired(session, clock.now())
    if audit is not None and (cases or jobs):
        set_identity(SYSTEM_IDENTITY)
        await audit.record("purge", f"cases/{cases} match-jobs/{jobs} older than {days} days")
    return cases, jobs
