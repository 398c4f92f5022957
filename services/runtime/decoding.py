"""Requests the services cannot read, refused before any handler runs:

- bytes that are no message of the method's request type. gRPC decodes a
  request before any interceptor or handler, and answers one it cannot
  decode with UNKNOWN, past the runtime interceptor's metrics and logs;
- text with a NUL character. Protobuf allows it, no field of ours means
  one, and PostgreSQL's text cannot hold it: every query with it fails.

`DecodingInterceptor`, the innermost interceptor, lets an undecodable
request through as `UNDECODABLE`, and the handler it wraps refuses both
kinds with INVALID_ARGUMENT: the caller learns what was wrong, and the
runtime interceptor authenticates, counts and logs the call like any other
refusal.

It also reads and writes gRPC's JSON codec (`application/grpc+json`), which
the Envoy edge's Connect bridge speaks for a browser's Connect JSON call: a
request that begins with `{` is JSON (no proto3 message begins with a group
tag), parsed by protobuf's own JSON mapping, and its answers are written in
JSON too. (gRPC's core labels every answer `application/grpc`; the edge
labels it with the request's codec: services/edge/config.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from services.runtime.errors import InvalidArgument

Context = aio.ServicerContext[Any, Any]


class _Undecodable:
    """Stands in for a request whose bytes did not decode."""


UNDECODABLE = _Undecodable()


class _Json:
    """A message that came, or goes back, in JSON."""

    def __init__(self, message: Any) -> None:
        self.message = message


def message_of(request: Any) -> Any:
    """The request message, whether it came as protobuf or as JSON (the
    runtime's interceptor reads a link's token before the handler runs)."""
    return request.message if isinstance(request, _Json) else request


class DecodingInterceptor(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler  # client and bidi streams: none of ours, reflection's only
        full_method = handler_call_details.method
        cached = self._wrapped.get(full_method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler)
        self._wrapped[full_method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Any) -> Any:
    parse = handler.request_deserializer
    message_class = getattr(parse, "__self__", None)
    message_type = getattr(message_class, "DESCRIPTOR", None)
    undecodable = f"not a valid {message_type.full_name if message_type else 'request'} message"
    write = handler.response_serializer

    def deserialize(data: bytes) -> Any:
        if data[:1] == b"{" and message_class is not None:
            try:
                return _Json(json_format.Parse(data, message_class()))
            except (json_format.ParseError, ValueError, RecursionError):  # bytes not UTF-8 too
                return UNDECODABLE
        try:
            return parse(data)
        except DecodeError:
            return UNDECODABLE

    def serialize(response: Any) -> bytes:
        if isinstance(response, _Json):
            return json_format.MessageToJson(response.message, indent=None).encode()
        return bytes(write(response))

    def check(request: Any) -> None:
        if request is UNDECODABLE:
            raise InvalidArgument.single("request", undecodable)
        if isinstance(request, Message):
            field = _text_with_nul(request)
            if field is not None:
                raise InvalidArgument.single(field, "must not contain NUL characters")

    if handler.unary_unary:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            if isinstance(request, _Json):
                check(request.message)
                return _Json(await unary(request.message, context))
            check(request)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=deserialize, response_serializer=serialize
        )
    if handler.unary_stream:
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            in_json = isinstance(request, _Json)
            request = request.message if in_json else request
            check(request)
            responses = stream(request, context)
            if not hasattr(responses, "__aiter__"):
                await responses  # a handler that writes with context.write
                return
            async for response in responses:
                yield _Json(response) if in_json else response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=deserialize, response_serializer=serialize
        )
    return handler


def _text_with_nul(message: Message, prefix: str = "") -> str | None:
    """The path of the first text field holding a NUL, e.g. `case.availability[2].note`."""
    for field, value in message.ListFields():
        path = prefix + field.name
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            texts = [str(k) + str(v) for k, v in value.items() if not isinstance(v, Message)]
            if any("\x00" in text for text in texts):
                return path
            continue
        items = list(enumerate(value)) if field.is_repeated else [(None, value)]
        for n, item in items:
            where = path if n is None else f"{path}[{n}]"
            if field.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                return where
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _text_with_nul(item, where + ".")
                if found is not None:
                    return found
    return None
