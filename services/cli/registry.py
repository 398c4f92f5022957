"""Which services exist, by the name `eapctl serve NAME` takes.

Each is imported only when built, so that commands which serve nothing
(`eapctl match solve`, say) do not pay for loading all three.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from services.runtime.config import Settings
    from services.runtime.server import Service

SERVICES: dict[str, str] = {
    "quota": "services.quota.service:QuotaService",
    "matcher": "services.matcher.service:MatcherService",
    "calendar": "services.calendar.service:CalendarService",
    # Last: it works in the matcher's database, which the matcher migrates first.
    "notifier": "services.notifier.service:NotifierService",
}


def build(names: list[str]) -> list[Service]:
    built = []
    for name in names:
        module, _, cls = SERVICES[name].partition(":")
        built.append(cast("Service", getattr(import_module(module), cls)()))
    return built


def own_stores(services: list[Service]) -> list[Service]:
    """The services that keep a database (and audit trail) of their own:
    not those that work in another's (the notifier, in the matcher's)."""
    return [s for s in services if not getattr(s, "store", "")]


async def migrate_all(settings: Settings) -> None:
    """Brings every service's tables, in every tenant's database, to the
    newest revision (`eapctl migrate`)."""
    from services.runtime import audit, database

    # The audit keys sign the trails' heads (services/runtime/audit.py).
    attributes = audit.migration_attributes(settings.audit_keys_file, settings.development)
    for tenant in settings.tenants:
        for service in own_stores(build(list(SERVICES))):
            engine = database.create_engine(settings.database_url_for(service.name, tenant))
            try:
                await database.migrate(
                    engine, service.migrations, service.version_table, attributes
                )
            finally:
                await engine.dispose()
