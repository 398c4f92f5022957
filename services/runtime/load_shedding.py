"""The front door's limit on the calls one process serves at once.

A server past its capacity that takes every call serves none of them in time:
each waits behind all the others until its caller's deadline passes (measured
on the quota service at twice its target rate: 39 of 1,692 pairs a second
completed). Past the limit, a new call is refused at once, before its request
is even decoded, RESOURCE_EXHAUSTED with a retry hint, so that the calls
taken finish in time and the refused callers can go elsewhere or come back.

Calls that finish work already begun (a quota Commit after its Reserve, a
booking's confirmation after its slot hold) and health checks are always
taken: refusing them would waste what the first call spent and leave holds
to lapse, and a probe refused under load would have Kubernetes restart a
pod that is only busy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from grpc import aio

from services.runtime import metrics, policy
from services.runtime.errors import ResourceExhausted
from services.runtime.status import to_status

RETRY_SECONDS = 1.0


class ConcurrencyLimit:
    def __init__(self, limit: int, always_served: Iterable[str] = ()) -> None:
        """`limit` calls at once (0: no limit); `always_served`: full method
        names, `package.Service/Method`, taken whatever the load."""
        self.limit = limit
        self.in_flight = 0
        self._always = frozenset(always_served)
        self._refusals: dict[str, Any] = {}

    def refusal(self, full_method: str, handler: Any) -> Any | None:
        """The handler that refuses this call, or None when it is taken."""
        if not self.limit or self.in_flight < self.limit:
            return None
        service, _, method = full_method.rpartition("/")
        if full_method in self._always or service in policy.PUBLIC_SERVICES:
            return None
        if not (handler.unary_unary or handler.unary_stream):
            return None  # reflection's streams: an operator's, and rare
        refusal = self._refusals.get(full_method)
        if refusal is None:
            refusal = self._refusals[full_method] = _refusal(service, method, handler)
        return refusal


def _refusal(service: str, method: str, handler: Any) -> Any:
    grpc_type = "server_stream" if handler.unary_stream else "unary"
    counters = (
        metrics.CALLS_SHED.labels(service, method),
        metrics.GRPC_STARTED.labels(grpc_type, service, method),
        metrics.GRPC_HANDLED.labels(grpc_type, service, method, "RESOURCE_EXHAUSTED"),
    )
    status = to_status(
        ResourceExhausted(
            f"the server is serving all the calls it can at once; retry in {RETRY_SECONDS:g} s",
            RETRY_SECONDS,
        )
    )

    async def refuse(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        for counter in counters:
            counter.inc()
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def refuse_stream(
        request: Any, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await refuse(request, context)
        yield None  # never reached: abort raises

    # No request deserializer: the request is never read, only refused.
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream, response_serializer=handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        refuse, response_serializer=handler.response_serializer
    )
