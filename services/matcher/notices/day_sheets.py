"""A counselor's day: each morning, every counselor with sessions that day
is sent the list of them (times, how each is held, where). The entry is
written once per counselor and day (its id is theirs and the day's, so
any number of notifiers write it once) and names the counselor by id
only; the sessions are read when it is delivered, so a cancellation in
between is left out. No client is named: the counselor sees who in the
booking system, behind sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.state import BookingState
from services.matcher.notices.rows import NoticeRow
from services.matcher.notices.state import NoticeState
from services.matcher.notices.writer import NoticeKind
from services.matcher.orm import BookingRow
from services.rules.office_time import OFFICE_ZONE, local_day

DAY_SHEET_HOUR = 7  # local time the day's list goes out, by default (EAP_DAY_SHEET_HOUR)


@dataclass(frozen=True)
class DaySession:
    start: datetime
    minutes: int
    modality: str
    place: str  # the location in person, the video room's link by video


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    first = datetime.combine(day, time.min, OFFICE_ZONE)
    return first, first + timedelta(days=1)


class DaySheets:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def schedule(self, now: datetime, hour: int | None = DAY_SHEET_HOUR) -> int:
        """Writes today's sheet for every counselor with a session still to
        come today, once `hour` has come (None: no sheets). Returns how
        many it wrote."""
        local = now.astimezone(OFFICE_ZONE)
        if hour is None or local.hour < hour:
            return 0
        day = local_day(now)
        _, end = _day_bounds(day)
        written = 0
        async with self._sessions() as session, session.begin():
            firsts = (
                await session.execute(
                    select(BookingRow.counselor_id, func.min(BookingRow.start))
                    .where(
                        BookingRow.state == BookingState.BOOKED.value,
                        BookingRow.start > now,
                        BookingRow.start < end,
                    )
                    .group_by(BookingRow.counselor_id)
                )
            ).all()
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            for counselor_id, first in firsts:
                sheet = f"day-{counselor_id}-{day.isoformat()}"
                result = await session.execute(
                    dialect.insert(NoticeRow)
                    .values(
                        notice_id=sheet,
                        kind=NoticeKind.DAY_SHEET.value,
                        employee_id=counselor_id,  # the recipient
                        booking_id="",
                        session_key=sheet,
                        sequence=0,
                        start=first,
                        minutes=0,
                        modality="",
                        place="",
                        due_at=now,
                        state=NoticeState.PENDING.value,
                        attempts=0,
                        owner="",
                        last_error="",
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                )
                written += int(getattr(result, "rowcount", 0) or 0)
        return written

    async def sessions(self, counselor_id: str, of: datetime) -> list[DaySession]:
        """The counselor's booked sessions on the day of `of`, in order (a
        group session once)."""
        begin, end = _day_bounds(local_day(of))
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        BookingRow.start,
                        BookingRow.minutes,
                        BookingRow.modality,
                        BookingRow.location,
                        BookingRow.video_link,
                        BookingRow.group_id,
                        BookingRow.booking_id,
                    )
                    .where(
                        BookingRow.counselor_id == counselor_id,
                        BookingRow.state == BookingState.BOOKED.value,
                        BookingRow.start >= begin,
                        BookingRow.start < end,
                    )
                    .order_by(BookingRow.start, BookingRow.booking_id)
                )
            ).all()
        seen: set[str] = set()
        found = []
        for start, minutes, modality, location, link, group, booking_id in rows:
            if (group or booking_id) in seen:
                continue
            seen.add(group or booking_id)
            place = link if modality == "video" else location
            found.append(DaySession(start, minutes, modality, place))
        return found
