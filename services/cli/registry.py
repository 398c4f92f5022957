"""Which services exist, by the name `eapctl serve NAME` takes."""

from __future__ import annotations

from collections.abc import Callable

from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime.server import Service

SERVICES: dict[str, Callable[[], Service]] = {
    "quota": QuotaService,
    "matcher": MatcherService,
    "calendar": CalendarService,
}


def build(names: list[str]) -> list[Service]:
    return [SERVICES[name]() for name in names]
