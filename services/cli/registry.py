"""Which services exist, by the name `eapctl serve NAME` takes."""

from __future__ import annotations

from collections.abc import Callable

from services.quota.service import QuotaService
from services.runtime.server import Service

SERVICES: dict[str, Callable[[], Service]] = {
    "quota": QuotaService,
}


def build(names: list[str]) -> list[Service]:
    return [SERVICES[name]() for name in names]
