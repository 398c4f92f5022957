"""Writing the outbox: inside the transaction of the change it tells of (a
booking confirmed, moved or cancelled), so that a change is never made
without its notice, nor a notice sent of a change that was rolled back; and
the reminders before a session, which the notifier schedules as their time
comes (outbox.py), at the hours its settings say.
"""

from __future__ import annotations

import uuid
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
    SURVEY = "survey"  # the satisfaction survey's link, after a session (survey/invite.py)
    DAY_SHEET = "day_sheet"  # a counselor's sessions of the day (day_sheets.py)


async def lineage(session: AsyncSession, booking: BookingRow) -> tuple[str, int]:
    """The session key and the last sequence told of a booking (or, for a
    move's new booking not told of yet, of the one it replaces); the
    booking's own id and -1 if nothing was told."""
    for booking_id in (booking.booking_id, booking.replaces_booking_id or ""):
        if not booking_id:
            continue
        row = (
            await session.execute(
                select(NoticeRow.session_key, func.max(NoticeRow.sequence))
                .where(NoticeRow.booking_id == booking_id)
                .group_by(NoticeRow.session_key)
            )
        ).first()
        if row:
            return row[0], int(row[1])
    return booking.booking_id, -1


def notice_fields(
    booking: BookingRow, kind: NoticeKind, key: str, sequence: int, due: datetime, now: datetime
) -> dict[str, object]:
    return {
        "kind": kind.value,
        "employee_id": booking.employee_id,
        "booking_id": booking.booking_id,
        "session_key": key,
        "sequence": sequence,
        "start": booking.start,
        "minutes": booking.minutes,
        "modality": booking.modality,
        "place": booking.location or booking.video_link,
        # An offer's deadline: the hold on its slot lapses then.
        "hold_until": booking.hold_expires_at if kind is NoticeKind.OFFER else None,
        "due_at": due,
        "state": NoticeState.PENDING.value,
        "attempts": 0,
        "owner": "",
        "last_error": "",
        "created_at": now,
        "updated_at": now,
    }


async def tell(session: AsyncSession, booking: BookingRow, kind: NoticeKind, now: datetime) -> None:
    """Records that the booking's person is to hear of `kind`. A booking that
    replaces another (a move) updates that one's invitation and drops its
    reminders not yet sent; a cancellation drops its own, and is told only
    of a session that was told of (not of a hold given up)."""
    replaced = booking.replaces_booking_id or ""
    if kind is NoticeKind.CONFIRMED and replaced:
        kind = NoticeKind.CHANGED
    key, sequence = await lineage(session, booking)
    if kind is NoticeKind.CANCELLED and sequence < 0:
        return
    if kind is NoticeKind.CHANGED:
        await void_reminders(session, replaced, now)
    if kind is NoticeKind.CANCELLED:
        await void_reminders(session, booking.booking_id, now)
    fields = notice_fields(booking, kind, key, sequence + 1, now, now)
    session.add(NoticeRow(notice_id=uuid.uuid4().hex, **fields))


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
