"""Tenants: the organisations that adopted a plan (a county, or a township
that took its county's: Miaoli 11.4), served side by side by one deployment
and never seeing or spending each other's data.

Isolation is by database: each tenant's records live in its own database
(`DATABASE_URL` with `{tenant}` in it, config.py), so every record carries
its tenant by where it is kept, and no query, however written, can reach
another tenant's rows. The runtime starts one instance of each service per
tenant (server.py) and routes every call to the caller's tenant's instance
(`TenantRouter`); its background loops run with their tenant set.

Whose tenant a call is: a user's token names it (the `tenant` claim; a
deployment of one tenant takes tokens without it as that tenant's); our
services, calling each other on a user's behalf or for their own loops,
pass it in the `x-eap-tenant` header, which only a service's call (or a
development call without a token) may set (auth.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

TENANT_HEADER = "x-eap-tenant"
TENANT_CLAIM = "tenant"
DEFAULT_TENANT = "default"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # fits a database name with room for a prefix

_tenant_var: ContextVar[str] = ContextVar("tenant", default="")


def current_tenant() -> str:
    """The tenant whose data the current call or loop works on; "" outside both."""
    return _tenant_var.get()


def set_tenant(tenant: str) -> None:
    _tenant_var.set(tenant)


def valid_name(tenant: str) -> bool:
    return NAME.fullmatch(tenant) is not None


LINK_SEPARATOR = "."  # in neither a tenant's name nor a URL-safe secret's alphabet
MAX_LINK_TOKEN_CHARS = 128


def tenant_of_link(token: str) -> str | None:
    """The tenant a one-time link's token (`<tenant>.<secret>`) names, or
    None when it is no token of ours: a link's reader does not sign in, so
    the token itself says whose database to look in."""
    tenant, separator, secret = token.partition(LINK_SEPARATOR)
    if not separator or not secret or len(token) > MAX_LINK_TOKEN_CHARS or not valid_name(tenant):
        return None
    return tenant


class TenantRouter:
    """Serves one gRPC service for every tenant: each method call goes to
    the servicer of the caller's tenant (set by the interceptor before the
    handler runs). The generated `add_...Servicer_to_server` reads the
    methods off this object when it registers them."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self._servicers = dict(servicers)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        methods = {tenant: getattr(s, name) for tenant, s in self._servicers.items()}
        if inspect.isasyncgenfunction(next(iter(methods.values()))):

            async def stream(request: object, context: object) -> AsyncIterator[object]:
                async for item in self._of(methods)(request, context):
                    yield item

            return stream

        async def unary(request: object, context: object) -> object:
            answer: Awaitable[object] = self._of(methods)(request, context)
            return await answer

        return unary

    @staticmethod
    def _of(methods: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
        # The interceptor refuses a call of a tenant not served here before
        # any handler runs: a miss is a bug, and fails closed.
        return methods[current_tenant()]
