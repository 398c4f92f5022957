"""The office calendar the matcher books by, from the calendar service.

The calendar service holds the years the project ships and every year an
operator imports (ImportOfficeCalendar), so a new year needs no code change.
The matcher keeps a copy, refreshed in the background; until the first
refresh, or while the calendar service cannot be reached, it books by the
shipped years and says so in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta

import grpc

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from services.office_calendar.calendar import OfficeCalendar, OfficeDay
from services.office_calendar.shipped import load_shipped
from services.runtime import clock
from services.runtime.service_identity import ServiceCredentials

log = logging.getLogger("eap.matcher")

DAYS_PER_CALL = 731  # the calendar service's limit
YEARS_BACK, YEARS_AHEAD = 1, 2


class CalendarPort:
    """`current` is the calendar to book by; `refresh` fetches it anew."""

    def __init__(self, address: Callable[[], str], credentials: ServiceCredentials) -> None:
        self._address = address
        self._credentials = credentials
        self.current: OfficeCalendar = load_shipped()
        self.from_service = False

    async def refresh(self) -> bool:
        """Fetches the known years around today; True when it got them."""
        today = clock.now().date()
        first = date(today.year - YEARS_BACK, 1, 1)
        last = date(today.year + YEARS_AHEAD, 12, 31)
        days: list[OfficeDay] = []
        try:
            async with self._credentials.channel(self._address()) as channel:
                stub = calendar_pb2_grpc.CalendarServiceStub(channel)
                start = first
                while start <= last:
                    end = min(start + timedelta(days=DAYS_PER_CALL - 1), last)
                    answer = await stub.ListOfficeDays(
                        cpb.ListOfficeDaysRequest(
                            start_date=start.isoformat(), end_date=end.isoformat()
                        ),
                        timeout=5,
                        metadata=self._credentials.metadata(),
                    )
                    days += [
                        OfficeDay(date.fromisoformat(d.date), d.open, d.note)
                        for d in answer.days
                        if d.from_official_calendar
                    ]
                    start = end + timedelta(days=1)
        except grpc.aio.AioRpcError as error:
            if self.from_service:
                log.warning("office calendar not refreshed", extra={"code": error.code().name})
            else:
                log.warning(
                    "calendar service unreachable; booking by the shipped office calendar",
                    extra={"code": error.code().name},
                )
            return False
        # Years the service does not know keep the shipped ones, if any.
        known = {d.day.year for d in days}
        shipped = load_shipped()
        days += [
            d
            for year in sorted(shipped.years - known)
            for d in shipped.between(date(year, 1, 1), date(year, 12, 31))
        ]
        self.current = OfficeCalendar(days)
        self.from_service = True
        return True
