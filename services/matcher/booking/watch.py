"""The check across services, run by the matcher itself every few minutes:
its sessions against the quota's charges (ListCharges), with a metric per
kind of problem for the alert (EapSessionsAndChargesDisagree).

The two sides are read at two moments while bookings go on, so the check
must not mistake a step between them for a fault. The charges are read
first; then a booking changed since (less a margin for clocks) is
`unsettled` and left out with its charge. That covers every step: a
booking's charge is committed before the booking is written down as
booked, and given back only after it is written down as cancelling, so a
charge the first read missed, or one it saw that is gone, belongs to a
booking the second read finds changed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.matcher import metrics
from services.matcher.booking.consistency import KINDS, Charge, Problem, Session, compare
from services.matcher.booking.state import BookingState
from services.matcher.orm import BookingRow
from services.matcher.quota_port import QuotaPort, pays_provider
from services.runtime import clock

log = logging.getLogger("eap.matcher")

# Between the two reads, and for replicas' clocks to disagree by.
SETTLE = timedelta(seconds=60)
LOGGED = 20  # problems named in the log line, at most


class ConsistencyWatch:
    def __init__(
        self, engine: AsyncEngine, quota: QuotaPort, retention_days: int, tenant: str
    ) -> None:
        self._tenant = tenant  # its gauges' label
        self._engine = engine
        self._quota = quota
        self._retention_days = retention_days

    async def check(self) -> list[Problem]:
        """Compares, sets the metrics, logs what it found; the problems."""
        tenant = self._tenant
        began = clock.now()
        charges = [
            Charge(
                hold.hold_id,
                hold.booking_ref,
                hold.minutes,
                hold.amount_ntd,
                hold.hourly_rate_ntd,
                hold.group.size or 1,
                hold.group.index,
                hold.session_start.ToDatetime(tzinfo=UTC),
                pays_provider(hold),
            )
            async for hold in self._quota.charges()
        ]
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        BookingRow.booking_id,
                        BookingRow.state,
                        BookingRow.employee_id,
                        BookingRow.start,
                        BookingRow.minutes,
                        BookingRow.updated_at,
                        BookingRow.funded,
                        BookingRow.attendance,
                    )
                )
            ).all()
        since = began - SETTLE
        sessions = [Session(r[0], BookingState(r[1]), r[2], r[3], r[4], r[6], r[7]) for r in rows]
        unsettled = {r[0] for r in rows if r[5] > since}
        purged_before = (
            began - timedelta(days=self._retention_days) if self._retention_days > 0 else None
        )
        problems = compare(sessions, charges, unsettled, purged_before)
        counts = Counter(p.rule for p in problems)
        for kind in KINDS:
            metrics.CONSISTENCY_PROBLEMS.labels(tenant, kind).set(counts.get(kind, 0))
        metrics.CONSISTENCY_CHECKED.labels(tenant).set(time.time())
        if problems:
            # Ids and amounts only: no person is named (standing promise 6).
            log.error(
                "sessions and charges disagree",
                extra={
                    "counts": dict(counts),
                    "problems": [str(p) for p in problems[:LOGGED]],
                },
            )
        return problems
