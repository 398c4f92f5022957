"""A waitlist entry as the use cases and the API see it: what the case
accepts (Wants), the entry with its place in line (EntryView), and the
line's order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.matcher.booking.offers import SlotFilter
from services.matcher.booking.search import LONGEST_WINDOW
from services.matcher.booking.waitlist_rows import LIVE_STATES, WaitlistRow
from services.matcher.booking.waitlist_state import LIVE, EntryState
from services.matcher.registry.counselors import Modality
from services.runtime.fields import FieldChecker

E = EntryState


@dataclass(frozen=True)
class Wants:
    """What a waiting case accepts beyond the case itself: sessions starting
    in [window_start, window_end) and the narrowing FindSlots takes."""

    window_start: datetime
    window_end: datetime
    modalities: tuple[Modality, ...] = ()
    counselor_id: str = ""
    earliest: time | None = None
    latest: time | None = None
    languages: tuple[str, ...] = ()

    def slot_filter(self) -> SlotFilter:
        return SlotFilter(
            self.modalities, self.earliest, self.latest, self.languages, self.counselor_id
        )

    def check(self, checker: FieldChecker, now: datetime) -> None:
        checker.require(
            self.window_start < self.window_end, "wishes.window_end", "after window_start"
        )
        checker.require(
            self.window_end - self.window_start <= LONGEST_WINDOW,
            "wishes.window_end",
            "at most 62 days after window_start",
        )
        checker.require(self.window_end > now, "wishes.window_end", "in the future")
        if self.counselor_id:
            checker.identifier(self.counselor_id, "wishes.counselor_id")
        if self.earliest and self.latest:
            checker.require(
                self.earliest <= self.latest,
                "wishes.latest_start_time",
                "not before earliest_start_time",
            )


def hhmm(moment: time | None) -> str:
    return moment.strftime("%H:%M") if moment else ""


def _time(text: str) -> time | None:
    return time.fromisoformat(text) if text else None


@dataclass(frozen=True)
class EntryView:
    entry_id: str
    case_id: str
    state: EntryState
    crisis: bool
    requeued: bool
    wants: Wants
    waiting_since: datetime
    offer_booking_id: str
    offer_expires_at: datetime | None
    lapses: int
    position: int  # 1 for the first in line; 0 when not in line

    @classmethod
    def of(cls, row: WaitlistRow, position: int = 0) -> EntryView:
        return cls(
            row.entry_id,
            row.case_id,
            E(row.state),
            row.crisis,
            row.requeued,
            wants_of(row),
            row.waiting_since,
            row.offer_booking_id,
            row.offer_expires_at,
            row.lapses,
            position,
        )


def wants_of(row: WaitlistRow) -> Wants:
    return Wants(
        row.window_start,
        row.window_end,
        tuple(Modality(m) for m in row.modalities),
        row.counselor_id,
        _time(row.earliest_time),
        _time(row.latest_time),
        tuple(row.languages),
    )


def in_line() -> tuple[InstrumentedAttribute[Any], ...]:
    """The order of the line: tier (rules/waitlist.rank), then waiting time."""
    return (WaitlistRow.rank, WaitlistRow.waiting_since, WaitlistRow.entry_id)


def ahead_of(row: WaitlistRow) -> ColumnElement[bool]:
    """Entries before `row` in line order (whatever their state)."""
    return or_(
        WaitlistRow.rank < row.rank,
        and_(WaitlistRow.rank == row.rank, WaitlistRow.waiting_since < row.waiting_since),
        and_(
            WaitlistRow.rank == row.rank,
            WaitlistRow.waiting_since == row.waiting_since,
            WaitlistRow.entry_id < row.entry_id,
        ),
    )


async def position_of(session: AsyncSession, row: WaitlistRow) -> int:
    """Where a live entry stands in line (1 first); 0 for one not in line."""
    if E(row.state) not in LIVE:
        return 0
    ahead = await session.scalar(
        select(func.count())
        .select_from(WaitlistRow)
        .where(WaitlistRow.state.in_(LIVE_STATES), ahead_of(row))
    )
    return int(ahead or 0) + 1


def window_of(wants: Wants, now: datetime) -> tuple[datetime, datetime] | None:
    """The part of the entry's window still to come that one search covers;
    None once it has passed."""
    begin = max(now, wants.window_start)
    end = min(wants.window_end, begin + LONGEST_WINDOW)
    return (begin, end) if end - begin >= timedelta(minutes=1) else None
