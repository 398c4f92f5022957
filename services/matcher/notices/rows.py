"""The matcher's outbox: what people are to be told, written in the same
transaction as the change it tells of (a booking confirmed, moved,
cancelled), and the reminders due before a session. The notifier
(services/notifier) delivers them; nothing here knows how.

An entry names its recipient by their pseudonymous id only: their address
is looked up in the sealed directory at delivery, so the outbox holds no
contact and no words but generic facts (a time, a place, a way to meet).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.matcher.orm import Base
from services.runtime.columns import UtcDateTime


class NoticeRow(Base):
    __tablename__ = "matcher_notices"
    notice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # notifier.wording.Kind
    employee_id: Mapped[str] = mapped_column(String(64))  # the recipient
    booking_id: Mapped[str] = mapped_column(String(64), index=True)
    # What stays the same across a session's moves (its first booking's id):
    # the invitation's UID; `sequence` grows with each change.
    session_key: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer)
    start: Mapped[datetime] = mapped_column(UtcDateTime())
    minutes: Mapped[int] = mapped_column(Integer)
    modality: Mapped[str] = mapped_column(String(16))
    place: Mapped[str] = mapped_column(String(200), default="")
    hold_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())  # not before
    state: Mapped[str] = mapped_column(String(16))  # state.NoticeState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Who is delivering it, until when (a crashed notifier's lease lapses).
    owner: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The channels that have delivered it: a retry after one of them failed
    # goes by the others only ("mail", "hook"; comma-separated).
    delivered_by: Mapped[str] = mapped_column(String(32), default="")
    # Why the last attempt failed, in the channel's words (never an address).
    last_error: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_matcher_notices_state_due_at", "state", "due_at"),)
