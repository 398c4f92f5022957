"""What every database-backed service does the same way when it starts and stops."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import database
from services.runtime.audit import AuditKeys, AuditTrail, Checkpoint, migration_attributes
from services.runtime.server import Runtime


class DatabaseService:
    """Opens the service's database, migrates it and probes it (and Redis, if
    the service uses it) for the health status. Subclasses set the names and
    add their own start-up in `started`."""

    name: str
    full_name: str
    migrations: Path
    version_table: str
    # The service whose database (and audit trail) this one works in; its
    # own when empty. The notifier works in the matcher's: its outbox.
    store = ""
    uses_redis = False
    audited = False  # keeps personal records: reads are written to its audit trail
    finishing_methods: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.tenant = ""  # the runtime's to set: the first tenant's until then
        self._engine: AsyncEngine | None = None
        self._redis: Redis | None = None
        self.lease_scope = ""
        self.audit: AuditTrail | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"the {self.name} service has not started")
        return self._engine

    @property
    def redis(self) -> Redis | None:
        return self._redis

    async def start(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.tenant = self.tenant or settings.tenants[0]
        url = settings.database_url_for(self.store or self.name, self.tenant)
        self._engine = database.create_engine(url, settings.database_pool_size)
        self.lease_scope = database.scope_of(url)
        await database.migrate(
            self._engine,
            self.migrations,
            self.version_table,
            migration_attributes(settings.audit_keys_file, settings.development),
        )
        if self.audited:
            keys = AuditKeys.load(settings.audit_keys_file, settings.development)
            # The trail's head checkpointed in Redis, outside the database,
            # where there is one (services/runtime/audit.py).
            checkpoint = (
                Checkpoint(runtime.redis, self.store or self.name, self.lease_scope)
                if runtime.redis is not None
                else None
            )
            self.audit = AuditTrail(self._engine, self.store or self.name, keys, checkpoint)
        if self.uses_redis:
            self._redis = runtime.redis
        await self.started(runtime)

    async def started(self, runtime: Runtime) -> None:
        """The service's own start-up, after its database is ready."""

    async def probe(self) -> dict[str, bool]:
        return await database.probe_stores(self.engine, self._redis)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
