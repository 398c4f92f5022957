"""gRPC translation for the calendar service."""

from __future__ import annotations

from typing import Any

from grpc import aio

from eap.calendar.v1 import calendar_pb2 as pb
from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar.office_days import OfficeDays

Context = aio.ServicerContext[Any, Any]


class CalendarServicer(calendar_pb2_grpc.CalendarServiceServicer):
    def __init__(self, office_days: OfficeDays) -> None:
        self._office_days = office_days

    async def ListOfficeDays(
        self, request: pb.ListOfficeDaysRequest, context: Context
    ) -> pb.ListOfficeDaysResponse:
        days = await self._office_days.between(request.start_date, request.end_date)
        return pb.ListOfficeDaysResponse(
            days=[
                pb.OfficeDay(
                    date=day.day.isoformat(),
                    open=day.open,
                    note=day.note,
                    make_up_workday=day.make_up_workday,
                    from_official_calendar=official,
                )
                for day, official in days
                if day.open or not request.office_days_only
            ]
        )

    async def ImportOfficeCalendar(
        self, request: pb.ImportOfficeCalendarRequest, context: Context
    ) -> pb.ImportOfficeCalendarResponse:
        days = await self._office_days.import_year(request.year, request.csv_content)
        open_days = sum(1 for d in days if d.open)
        return pb.ImportOfficeCalendarResponse(
            year=request.year, office_days=open_days, closed_days=len(days) - open_days
        )
