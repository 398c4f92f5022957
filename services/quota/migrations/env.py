from services.quota.orm import Base
from services.quota.service import QuotaService
from services.runtime.database import run_migrations_in_env

run_migrations_in_env(Base.metadata, QuotaService.version_table)
