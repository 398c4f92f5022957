from services.matcher.orm import Base
from services.matcher.service import MatcherService
from services.runtime.database import run_migrations_in_env

run_migrations_in_env(Base.metadata, MatcherService.version_table)
