"""Agencies' organisations, contract rates and entitlement policies, cached
for a moment.

Every reservation needs them and they change a few times a year, so each
replica keeps what it read for `TTL_SECONDS` instead of reading them in
every batch. A change made through this replica clears its cache at once;
another replica sees it within `TTL_SECONDS`. Only found entries are kept:
a missing contract or policy is asked for again each time.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy import select as sql_select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.quota import orm
from services.runtime.database import padded

TTL_SECONDS = 2.0
K = TypeVar("K")


class _Expiring(dict[K, tuple[float, Any]]):
    def fresh(self, keys: Collection[K], now: float) -> dict[K, Any]:
        found = {}
        for key in keys:
            entry = self.get(key)
            if entry is not None and entry[0] > now:
                found[key] = entry[1]
        return found

    def keep(self, values: dict[K, Any], now: float) -> None:
        for key, value in values.items():
            self[key] = (now + TTL_SECONDS, value)


class ReferenceData:
    def __init__(self) -> None:
        self._organisations: _Expiring[str] = _Expiring()
        self._rates: _Expiring[tuple[str, int]] = _Expiring()
        self._policies: _Expiring[tuple[str, str, int]] = _Expiring()

    def clear(self) -> None:
        for cache in (self._organisations, self._rates, self._policies):
            cache.clear()

    async def organisations(
        self, connection: AsyncConnection, agencies: set[str]
    ) -> dict[str, str]:
        agency = orm.Agency
        return await self._lookup(
            connection,
            self._organisations,
            agencies,
            lambda missing: sql_select(agency.agency_id, agency.organisation).where(
                agency.agency_id.in_(padded(missing))
            ),
        )

    async def rates(
        self, connection: AsyncConnection, contracts: set[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        contract = orm.ProviderContract
        return await self._lookup(
            connection,
            self._rates,
            contracts,
            lambda missing: sql_select(
                contract.provider_id, contract.fiscal_year, contract.hourly_rate_ntd
            ).where(tuple_(contract.provider_id, contract.fiscal_year).in_(padded(missing))),
        )

    async def policies(
        self, connection: AsyncConnection, wanted: set[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], int]:
        policy = orm.EntitlementPolicy
        columns = (policy.organisation, policy.staff_category, policy.fiscal_year)
        return await self._lookup(
            connection,
            self._policies,
            wanted,
            lambda missing: sql_select(*columns, policy.minutes).where(
                tuple_(*columns).in_(padded(missing))
            ),
        )

    async def _lookup(
        self,
        connection: AsyncConnection,
        cache: _Expiring[Any],
        keys: set[Any],
        query: Any,
    ) -> dict[Any, Any]:
        now = time.monotonic()
        found = cache.fresh(keys, now)
        missing = keys - found.keys()
        if missing:
            statement: Select[Any] = query(missing)
            # Each row is the key's columns, then the value.
            read = {
                (row[0] if len(row) == 2 else tuple(row[:-1])): row[-1]
                for row in await connection.execute(statement)
            }
            cache.keep(read, now)
            found.update(read)
        return found
