"""The notifier's side of the outbox: take the entries that are due (a
lease, by compare-and-set), and record how each delivery went.

Retries back off (a minute, doubling, at most an hour), so a mail server
that is down for a while delays messages and loses none; an entry refused
for good, or failing MAX_ATTEMPTS times, is dead, visible to operators
(metrics, `eapctl`), and retried only when one of them says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking import tenant_policy
from services.matcher.booking.state import BookingState
from services.matcher.notices.rows import NoticeRow
from services.matcher.notices.state import NoticeState, step
from services.matcher.notices.writer import REMINDERS, NoticeKind, lineage, notice_fields
from services.matcher.orm import BookingRow

N = NoticeState
LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 12
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class Due:
    """An entry this notifier now delivers."""

    notice_id: str
    kind: str
    employee_id: str
    session_key: str
    sequence: int
    start: datetime
    minutes: int
    modality: str
    place: str
    hold_until: datetime | None
    attempts: int  # this one included
    delivered_by: frozenset[str] = frozenset()  # channels done at an earlier attempt


def backoff(attempts: int) -> timedelta:
    wait: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(wait, LONGEST_RETRY)


class Outbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def claim(self, owner: str, now: datetime, batch: int = 20) -> list[Due]:
        """Up to `batch` entries due now (or whose deliverer's lease lapsed),
        leased to `owner`: no other notifier takes them meanwhile."""
        takeable = or_(
            and_(NoticeRow.state == N.PENDING.value, NoticeRow.due_at <= now),
            and_(NoticeRow.state == N.SENDING.value, NoticeRow.lease_until < now),
        )
        taken: list[Due] = []
        async with self._sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(NoticeRow).where(takeable).order_by(NoticeRow.due_at).limit(batch)
                )
            ).all()
            for row in rows:
                won = await step(
                    session,
                    row.notice_id,
                    frozenset({N.PENDING, N.SENDING}),
                    N.SENDING,
                    now,
                    condition=and_(takeable, NoticeRow.attempts == row.attempts),
                    owner=owner,
                    lease_until=now + LEASE,
                    attempts=row.attempts + 1,
                )
                if won:
                    taken.append(
                        Due(
                            row.notice_id,
                            row.kind,
                            row.employee_id,
                            row.session_key,
                            row.sequence,
                            row.start,
                            row.minutes,
                            row.modality,
                            row.place,
                            row.hold_until,
                            row.attempts + 1,
                            frozenset(c for c in row.delivered_by.split(",") if c),
                        )
                    )
        return taken

    async def schedule_reminders(
        self, now: datetime, reminders: Sequence[timedelta] = REMINDERS
    ) -> int:
        """Writes the reminders whose time has come: for each booked session
        not yet started, the latest of `reminders` before it that has passed,
        unless the session was booked after that (its confirmation says as
        much). Each reminder's id is its booking's and its offset's, so any
        number of notifiers at once write it once. The tenant's booking
        policy, where it sets reminder hours, stands for `reminders`.
        Returns how many it wrote."""
        written = 0
        async with self._sessions() as session, session.begin():
            hours = (await tenant_policy.load(session)).reminder_hours
            if hours is not None:
                reminders = [timedelta(hours=h) for h in hours]
            offsets = sorted(reminders)  # nearest the session first
            if not offsets:
                return 0
            bookings = await session.scalars(
                select(BookingRow).where(
                    BookingRow.state == BookingState.BOOKED.value,
                    BookingRow.start > now,
                    BookingRow.start <= now + offsets[-1],
                )
            )
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            for booking in bookings.all():
                due = next((booking.start - r for r in offsets if booking.start - r <= now), None)
                if due is None or due <= booking.updated_at:
                    continue
                minutes = int((booking.start - due).total_seconds() // 60)
                key, sequence = await lineage(session, booking)
                fields = notice_fields(
                    booking, NoticeKind.REMINDER, key, max(sequence, 0), due, now
                )
                result = await session.execute(
                    dialect.insert(NoticeRow)
                    .values(notice_id=f"reminder-{booking.booking_id}-{minutes}", **fields)
                    .on_conflict_do_nothing()
                )
                written += int(getattr(result, "rowcount", 0) or 0)
        return written

    async def delivered_by(self, due: Due, owner: str, channel: str) -> None:
        """Records that `channel` delivered the entry (while `owner` holds
        it), so that a retry goes by the other channels only."""
        done = ",".join(sorted({*due.delivered_by, channel}))
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(NoticeRow)
                .where(NoticeRow.notice_id == due.notice_id, NoticeRow.owner == owner)
                .values(delivered_by=done)
                .execution_options(synchronize_session=False)
            )

    async def sent(
        self, due: Due, owner: str, now: datetime, end: NoticeState = N.SENT, why: str = ""
    ) -> bool:
        """Ends the entry `owner` holds: sent, or void when it turned out
        to have nothing to say or nobody to say it to (`why`)."""
        assert end in (N.SENT, N.VOID)
        # A survey's sealed link is forgotten once it is out: after that,
        # not even the data keys tie the session to its token.
        forget = {"place": ""} if due.kind == NoticeKind.SURVEY.value else {}
        async with self._sessions() as session, session.begin():
            return await step(
                session,
                due.notice_id,
                N.SENDING,
                end,
                now,
                condition=NoticeRow.owner == owner,
                lease_until=None,
                last_error=why[:200],
                **forget,
            )

    async def failed(
        self, due: Due, owner: str, now: datetime, reason: str, permanent: bool
    ) -> NoticeState:
        """Records a failed attempt: again later, or dead. Returns which."""
        target = N.DEAD if permanent or due.attempts >= MAX_ATTEMPTS else N.PENDING
        async with self._sessions() as session, session.begin():
            await step(
                session,
                due.notice_id,
                N.SENDING,
                target,
                now,
                condition=NoticeRow.owner == owner,
                owner="",
                lease_until=None,
                due_at=now + backoff(due.attempts),
                last_error=reason[:200],
            )
        return target

    async def retry_dead(self, now: datetime) -> int:
        """An operator's retry of every dead entry (the cause fixed)."""
        async with self._sessions() as session, session.begin():
            ids = (
                await session.scalars(
                    select(NoticeRow.notice_id).where(NoticeRow.state == N.DEAD.value)
                )
            ).all()
            for notice_id in ids:
                await step(session, notice_id, N.DEAD, N.PENDING, now, due_at=now, attempts=0)
        return len(ids)

    async def counts(self) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(NoticeRow.state, func.count()).group_by(NoticeRow.state)
            )
            return {state: int(count) for state, count in rows.all()}

    async def waited_seconds(self, now: datetime) -> float:
        """How long the longest-waiting deliverable entry has been due (0 if
        none waits)."""
        async with self._sessions() as session:
            due: datetime | None = await session.scalar(
                select(func.min(NoticeRow.due_at)).where(
                    NoticeRow.state.in_([N.PENDING.value, N.SENDING.value])
                )
            )
        return max((now - due).total_seconds(), 0.0) if due else 0.0
