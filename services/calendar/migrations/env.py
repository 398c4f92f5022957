from services.calendar.orm import Base
from services.calendar.service import CalendarService
from services.runtime.database import run_migrations_in_env

run_migrations_in_env(Base.metadata, CalendarService.version_table)
