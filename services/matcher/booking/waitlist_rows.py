"""The waitlist as stored: one row per time a case joined the list
(booking/waitlist.py), its place in line and what it accepts, and the
offer it holds, if any; and the row as the use cases see it.

At most one entry per case is live (waiting or offered): a partial unique
index says so, on SQLite and PostgreSQL alike, so two replicas joining or
requeueing one case at once leave one entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from services.matcher.orm import Base
from services.runtime.columns import UtcDateTime

# The states in which an entry holds its case's place in line.
LIVE_STATES = ("waiting", "offered")
LIVE_WHERE = text("state IN ('waiting', 'offered')")


class WaitlistRow(Base):
    __tablename__ = "matcher_waitlist"
    entry_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64))
    # The case's owner, pseudonymous: whose entry it is (policy OWN).
    employee_id: Mapped[str] = mapped_column(String(64), index=True)
    # Its tier in line (rules/waitlist.rank): lower goes first.
    rank: Mapped[int] = mapped_column(Integer)
    crisis: Mapped[bool] = mapped_column(Boolean)
    # Put on the list by the counselor's own cancellation (requeue_first).
    requeued: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the case accepts beyond the case itself (booking/offers.SlotFilter):
    # session starts inside [window_start, window_end), these modalities (empty:
    # the case's), this counselor only (empty: any qualified), local start
    # times "HH:MM" (empty: no bound), these languages (empty: any).
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    window_end: Mapped[datetime] = mapped_column(UtcDateTime())
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    counselor_id: Mapped[str] = mapped_column(String(64), default="")
    earliest_time: Mapped[str] = mapped_column(String(5), default="")
    latest_time: Mapped[str] = mapped_column(String(5), default="")
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    waiting_since: Mapped[datetime] = mapped_column(UtcDateTime())
    state: Mapped[str] = mapped_column(String(16))  # waitlist_state.EntryState
    # The case's booked sessions when it joined: one more means it got what
    # it waited for, by whatever path.
    sessions_at_join: Mapped[int] = mapped_column(Integer, default=0)
    # The offer it holds now: a held booking, lapsing at offer_expires_at.
    offer_booking_id: Mapped[str] = mapped_column(String(64), default="")
    offer_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Slots it let lapse or declined, [[counselor_id, start ISO], ...]: never
    # offered to it again.
    passed: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    lapses: Mapped[int] = mapped_column(Integer, default=0)
    # Grows with every step: the compare-and-set's witness.
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index(
            "ux_matcher_waitlist_live_case",
            "case_id",
            unique=True,
            postgresql_where=LIVE_WHERE,
            sqlite_where=LIVE_WHERE,
        ),
        Index("ix_matcher_waitlist_state_rank", "state", "rank", "waiting_since"),
        Index("ix_matcher_waitlist_offer_booking_id", "offer_booking_id"),
    )
