"""Inviting the employee of an attended session to the survey, in the
transaction that completes it: the invitation (by its token's hash, with
the keys its answers will carry) and the SURVEY notice that brings the
link, both or neither.

The booking saga's completion calls `invite` when its step to COMPLETED
wins, for an attended session only.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from cryptography.fernet import MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.notices.rows import NoticeRow
from services.matcher.notices.writer import NoticeKind, lineage, notice_fields
from services.matcher.orm import BookingRow, CaseRow
from services.matcher.survey import links
from services.matcher.survey.rows import InvitationRow
from services.rules.attendance import Attendance
from services.rules.office_time import iso_week
from services.rules.survey import expiry_of
from services.runtime.tenancy import DEFAULT_TENANT, current_tenant


async def invite(
    session: AsyncSession, booking: BookingRow, now: datetime, data_keys: MultiFernet
) -> None:
    """Writes the survey's invitation and its notice for `booking`'s
    employee, in `session`'s transaction. Nothing for a session that was
    not attended, nor a second time for the same booking."""
    if booking.attendance not in ("", Attendance.ATTENDED.value):
        return
    told = await session.scalar(
        select(NoticeRow.notice_id).where(
            NoticeRow.booking_id == booking.booking_id,
            NoticeRow.kind == NoticeKind.SURVEY.value,
        )
    )
    if told is not None:
        return
    category = await session.scalar(
        select(CaseRow.category).where(CaseRow.case_id == booking.case_id)
    )
    week = iso_week(booking.start)
    secret = links.new_secret()
    token = links.token_of(current_tenant() or DEFAULT_TENANT, secret)
    session.add(
        InvitationRow(
            token_hash=links.token_hash(token),
            iso_week=week.label,
            provider_id=booking.provider_id,
            category=category or "",
            expires_at=expiry_of(week),
        )
    )
    key, sequence = await lineage(session, booking)
    fields = notice_fields(booking, NoticeKind.SURVEY, key, max(sequence, 0), now, now)
    # A survey notice's place is its link's token, sealed (links.py), and
    # blanked once delivered (notices/outbox.py); it says until when.
    fields["place"] = links.seal(token, data_keys)
    fields["hold_until"] = expiry_of(week)
    session.add(NoticeRow(notice_id=uuid.uuid4().hex, **fields))
