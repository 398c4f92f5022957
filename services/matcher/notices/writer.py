"""Writing the outbox, inside the transaction of the change it tells of:
a booking confirmed, moved or cancelled, and the reminders before it. So a
change is never made without its notice, nor a notice sent of a change that
was rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.notices.rows import NoticeRow
from services.matcher.notices.state import NoticeState
from services.matcher.orm import BookingRow

# When reminders go out before a session, by default (EAP_REMINDER_HOURS).
REMINDERS = (timedelta(hours=24), timedelta(hours=2))


class NoticeKind(StrEnum):
    CONFIRMED = "confirmed"
    CHANGED = "changed"
    CANCELLED = "cancelled"
    REMINDER = "reminder"
    OFFER = "offer"  # a waitlist's free time, held for the person


async def _lineage(session: AsyncSession, booking_id: str) -> tuple[str, int]:
    """The session key and the last sequence told for a booking, or the
    booking's own id and -1 if nothing was told of it yet."""
    row = (
        await session.execute(
            select(NoticeRow.session_key, func.max(NoticeRow.sequence))
            .where(NoticeRow.booking_id == booking_id)
            .group_by(NoticeRow.session_key)
        )
    ).first()
    return (row[0], int(row[1])) if row else (booking_id, -1)


async def tell(
    session: AsyncSession,
    booking: BookingRow,
    kind: NoticeKind,
    now: datetime,
    reminders: Sequence[timedelta] = REMINDERS,
) -> None:
    """Records that the booking's person is to hear of `kind`, and for a
    session booked or moved the reminders still ahead of it. A booking that
    replaces another (a move) updates that one's invitation; a cancellation
    is told only of a session that was told of (not of a hold given up)."""
    replaced = booking.replaces_booking_id or ""
    if kind is NoticeKind.CONFIRMED and replaced:
        kind = NoticeKind.CHANGED
    key, sequence = await _lineage(session, booking.booking_id)
    if sequence < 0 and replaced:  # a move's new booking: the session goes on
        key, sequence = await _lineage(session, replaced)
    if kind is NoticeKind.CANCELLED and sequence < 0:
        return
    if kind is NoticeKind.CHANGED:
        await void_reminders(session, replaced, now)
    if kind is NoticeKind.CANCELLED:
        await void_reminders(session, booking.booking_id, now)
    due = [(kind, now)]
    if kind in (NoticeKind.CONFIRMED, NoticeKind.CHANGED):
        due += [
            (NoticeKind.REMINDER, booking.start - r) for r in reminders if booking.start - r > now
        ]
    for what, at in due:
        session.add(
            NoticeRow(
                notice_id=uuid.uuid4().hex,
                kind=what.value,
                employee_id=booking.employee_id,
                booking_id=booking.booking_id,
                session_key=key,
                sequence=sequence + 1,
                start=booking.start,
                minutes=booking.minutes,
                modality=booking.modality,
                place=booking.location or booking.video_link,
                due_at=at,
                state=NoticeState.PENDING.value,
                created_at=now,
                updated_at=now,
            )
        )


async def void_reminders(session: AsyncSession, booking_id: str, now: datetime) -> None:
    """The booking's reminders not yet sent are dropped: it was cancelled
    or moved. (Through the state machine's pending -> void, in bulk.)"""
    await session.execute(
        update(NoticeRow)
        .where(
            NoticeRow.booking_id == booking_id,
            NoticeRow.kind == NoticeKind.REMINDER.value,
            NoticeRow.state == NoticeState.PENDING.value,
        )
        .values(state=NoticeState.VOID.value, updated_at=now)
        .execution_options(synchronize_session=False)
    )
