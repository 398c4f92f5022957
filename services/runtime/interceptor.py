"""What happens around every call, in one place: request id, caller identity,
deadline, metrics, logging, and translation of errors into statuses."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from services.runtime import metrics
from services.runtime.auth import Authenticator, set_identity
from services.runtime.database import is_unavailable
from services.runtime.errors import ServiceError, Unavailable
from services.runtime.logs import request_id_var
from services.runtime.status import internal_status, to_status

log = logging.getLogger("eap.rpc")

# Kubelet and load balancers probe health without credentials.
_UNAUTHENTICATED_SERVICES = frozenset({"grpc.health.v1.Health"})

Handler = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamHandler = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


class _Method:
    """One RPC method's metric children, bound once: `labels()` per call is a
    lock and a dict lookup each."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self.service = service
        self.method = method
        labels = (grpc_type, service, method)
        self.started = metrics.GRPC_STARTED.labels(*labels)
        self.seconds = metrics.GRPC_HANDLING_SECONDS.labels(*labels)
        self._labels = labels
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = metrics.GRPC_HANDLED.labels(*self._labels, code.name)
        return child


class _Call:
    """Bookkeeping of one call: its method, clock and outcome."""

    __slots__ = ("code", "method", "started")

    def __init__(self, method: _Method) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        method.started.inc()

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.method.handled(self.code).inc()
        self.method.seconds.observe(elapsed)
        if self.code is not grpc.StatusCode.OK:
            log.info(
                "rpc refused",
                extra={
                    "grpc_method": f"{self.method.service}/{self.method.method}",
                    "grpc_code": self.code.name,
                    "ms": round(elapsed * 1000, 2),
                },
            )


class RuntimeInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method = handler_call_details.method
        cached = self._wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, full_method)
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, full_method: str) -> Any:
        """The method's handler inside the runtime's guard; built once per method."""
        service, _, method = full_method.lstrip("/").rpartition("/")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._server_stream(handler.unary_stream, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client and bidi streams: none of ours, reflection's only

    def _enter(self, service: str, context: aio.ServicerContext[Any, Any]) -> None:
        metadata: Any = context.invocation_metadata() or ()
        request_id = next((str(v) for k, v in metadata if k == "x-request-id"), None)
        request_id = (request_id or uuid.uuid4().hex)[:64]
        request_id_var.set(request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        if service not in _UNAUTHENTICATED_SERVICES:
            set_identity(self._authenticator.identify(metadata))

    def _unary(self, behaviour: Handler, service: str, method: str) -> Handler:
        bound = _Method("unary", service, method)

        async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(bound)
            deadline = None
            try:
                self._enter(service, context)
                deadline = asyncio.timeout(context.time_remaining())
                async with deadline:
                    return await behaviour(request, context)
            except BaseException as error:
                await self._handle(call, context, error, deadline)
            finally:
                call.finish()

        return wrapped

    def _server_stream(self, behaviour: StreamHandler, service: str, method: str) -> StreamHandler:
        bound = _Method("server_stream", service, method)

        async def wrapped(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(bound)
            deadline = None
            try:
                self._enter(service, context)
                deadline = asyncio.timeout(context.time_remaining())
                async with deadline:
                    async for response in behaviour(request, context):
                        yield response
            except BaseException as error:
                await self._handle(call, context, error, deadline)
            finally:
                call.finish()

        return wrapped

    async def _handle(
        self,
        call: _Call,
        context: aio.ServicerContext[Any, Any],
        error: BaseException,
        deadline: asyncio.Timeout | None,
    ) -> None:
        """Re-raises what gRPC must see (an abort, a cancellation); turns
        every other error into its status."""
        if isinstance(error, aio.AbortError):
            raise error
        if isinstance(error, asyncio.CancelledError):
            call.code = grpc.StatusCode.CANCELLED
            raise error
        if not isinstance(error, Exception):
            raise error
        if isinstance(error, ServiceError):
            status = to_status(error)
        elif is_unavailable(error):
            full = call.method.service
            service = full.split(".")[1] if "." in full else full
            metrics.STORE_ERRORS.labels(service, "database").inc()
            status = to_status(Unavailable("a store the service needs is unreachable; retry"))
        elif isinstance(error, TimeoutError) and deadline is not None and deadline.expired():
            call.code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(call.code, "deadline exceeded")
        else:
            correlation_id = request_id_var.get() or uuid.uuid4().hex
            metrics.UNEXPECTED_ERRORS.labels(call.method.service, call.method.method).inc()
            # The stack and the exception's type, never its message: a
            # database error's message quotes the row, personal data and all.
            log.error(
                "unexpected error",
                extra={
                    "grpc_method": f"{call.method.service}/{call.method.method}",
                    "error_type": type(error).__qualname__,
                    "stack": "".join(traceback.format_tb(error.__traceback__)),
                },
            )
            status = internal_status(correlation_id)
        call.code = status.code
        await context.abort(status.code, status.details, status.trailing_metadata)
