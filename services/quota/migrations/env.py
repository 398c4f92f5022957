from services.quota.orm import Base
from services.quota.service import VERSION_TABLE
from services.runtime.database import run_migrations_in_env

run_migrations_in_env(Base.metadata, VERSION_TABLE)
