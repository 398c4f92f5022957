"""What happens around every call, in one place: request id, caller identity
and the access policy, deadline, metrics, logging, and translation of errors
into statuses."""

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

from services.runtime import audit, i18n, metrics, policy
from services.runtime import deadline as call_deadline
from services.runtime.auth import Authenticator, current_identity, set_identity
from services.runtime.database import is_unavailable
from services.runtime.decoding import message_of
from services.runtime.errors import PermissionDenied, ServiceError, Unavailable
from services.runtime.load_shedding import ConcurrencyLimit
from services.runtime.logs import request_id_var
from services.runtime.rate_limit import RateLimiter
from services.runtime.status import internal_status, to_status
from services.runtime.tenancy import set_tenant

log = logging.getLogger("eap.rpc")

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
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter | None = None,
        concurrency: ConcurrencyLimit | None = None,
        default_language: str = i18n.DEFAULT_LANGUAGE,
    ) -> None:
        self._default_language = default_language
        self._authenticator = authenticator
        self._limiter = limiter
        self._concurrency = concurrency or ConcurrencyLimit(0)
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
        refusal = self._concurrency.refusal(full_method.lstrip("/"), handler)
        if refusal is not None:
            return refusal
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
        if handler.stream_stream:  # none of ours: reflection's
            return grpc.stream_stream_rpc_method_handler(
                self._bidi_stream(handler.stream_stream, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streams: none at all

    async def _enter(
        self,
        service: str,
        method: str,
        context: aio.ServicerContext[Any, Any],
        request: Any = None,
    ) -> None:
        metadata: Any = context.invocation_metadata() or ()
        request_id = next((str(v) for k, v in metadata if k == "x-request-id"), None)
        request_id = (request_id or uuid.uuid4().hex)[:64]
        request_id_var.set(request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        purpose = next((str(v) for k, v in metadata if k == "x-eap-purpose"), method)
        wanted = next((str(v) for k, v in metadata if k == "accept-language"), None)
        i18n.set_language(i18n.negotiate(wanted, self._default_language))
        audit.set_purpose(purpose)
        if f"{service}/{method}" in policy.LINK_METHODS:
            # The link's token in the request is the credential, whatever
            # else the call carries.
            token = getattr(message_of(request), "token", "")
            identity = self._authenticator.link_holder(str(token))
        elif service not in policy.PUBLIC_SERVICES:
            # Awaited: a token naming a key just rotated in at the identity
            # provider waits for its key set, fetched off the event loop.
            identity = await self._authenticator.authenticate(metadata)
        else:
            return
        set_identity(identity)
        set_tenant(identity.tenant)
        policy.authorize(f"{service}/{method}", identity)

    async def _limit(self, service: str) -> None:
        if self._limiter is not None and service not in policy.PUBLIC_SERVICES:
            await self._limiter.check(current_identity())

    @staticmethod
    def _leave(method: _Method) -> None:
        """Refuses an answer whose scope no record check applied."""
        if policy.unchecked():
            log.error(
                "scoped call answered without a record check",
                extra={"grpc_method": f"{method.service}/{method.method}"},
            )
            raise PermissionDenied("the caller's access to these records was not established")

    def _unary(self, behaviour: Handler, service: str, method: str) -> Handler:
        bound = _Method("unary", service, method)
        concurrency = self._concurrency

        async def wrapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(bound)
            deadline = None
            concurrency.in_flight += 1
            try:
                await self._enter(service, method, context, request)
                await self._limit(service)
                remaining = context.time_remaining()
                call_deadline.set_remaining(remaining)
                deadline = asyncio.timeout(remaining)
                async with deadline:
                    response = await behaviour(request, context)
                self._leave(bound)
                return response
            except BaseException as error:
                await self._handle(call, context, error, deadline)
            finally:
                concurrency.in_flight -= 1
                call.finish()

        return wrapped

    def _server_stream(self, behaviour: StreamHandler, service: str, method: str) -> StreamHandler:
        bound = _Method("server_stream", service, method)
        concurrency = self._concurrency

        async def wrapped(
            request: Any, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(bound)
            deadline = None
            concurrency.in_flight += 1
            try:
                await self._enter(service, method, context)
                await self._limit(service)
                remaining = context.time_remaining()
                call_deadline.set_remaining(remaining)
                deadline = asyncio.timeout(remaining)
                async with deadline:
                    async for response in behaviour(request, context):
                        self._leave(bound)
                        yield response
            except BaseException as error:
                await self._handle(call, context, error, deadline)
            finally:
                concurrency.in_flight -= 1
                call.finish()

        return wrapped

    def _bidi_stream(self, behaviour: Any, service: str, method: str) -> Any:
        """Authentication and the policy only: reflection is not ours to time."""

        async def wrapped(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                await self._enter(service, method, context)
            except ServiceError as error:
                status = to_status(error)
                await context.abort(status.code, status.details, status.trailing_metadata)
            async for response in behaviour(requests, context):
                yield response

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
            # The caller's deadline, which gRPC enforces too: the caller has
            # its answer (DEADLINE_EXCEEDED) or is about to. Sending one of
            # our own races gRPC's and, losing, is an error inside gRPC
            # (ExecuteBatchError), so the handler just stops.
            call.code = grpc.StatusCode.DEADLINE_EXCEEDED
            raise asyncio.CancelledError from error
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
