"""The calendar service as the runtime starts it."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from eap.calendar.v1 import calendar_pb2_grpc
from services.calendar import program_reading
from services.calendar.groups import GroupSessions
from services.calendar.matcher_port import MatcherPort
from services.calendar.office_days import OfficeDays
from services.calendar.plans import PlanRunner, Plans
from services.calendar.servicer import CalendarServicer
from services.runtime.server import Runtime
from services.runtime.service_base import DatabaseService
from services.runtime.service_identity import ServiceCredentials


class CalendarService(DatabaseService):
    name = "calendar"
    full_name = "eap.calendar.v1.CalendarService"
    migrations = Path(__file__).parent / "migrations"
    version_table = "alembic_version_calendar"

    async def started(self, runtime: Runtime) -> None:
        program_reading.warm_up()  # its interpreter starts while the service does
        self.office_days = OfficeDays(self.engine)
        await self.office_days.seed_shipped_years()
        self.plans = Plans(self.engine, self.office_days)
        runtime.spawn(PlanRunner(self.engine, self.office_days).run_forever(), "calendar-plans")
        settings = runtime.settings
        self.matcher = MatcherPort(
            lambda: settings.matcher_address or f"127.0.0.1:{runtime.port}",
            ServiceCredentials(self.name, settings),
        )
        self.groups = GroupSessions(self.matcher, self.office_days)

    async def close(self) -> None:
        await self.matcher.close()
        await super().close()

    def servicer(self) -> object:
        return CalendarServicer(self.office_days, self.plans, self.groups)

    def add_to_server(self, servicer: object, server: aio.Server) -> None:
        calendar_pb2_grpc.add_CalendarServiceServicer_to_server(servicer, server)  # type: ignore[arg-type]
