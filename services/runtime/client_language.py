"""Our command-line tools as clients of the services, in their reader's
language: each call says `accept-language` (the services then word their
refusals' LocalizedMessage, and what they write for people, in it), and a
refusal is shown by its LocalizedMessage rather than the status's English."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime import i18n


def accept_language() -> tuple[str, str]:
    """The metadata entry asking for the current language."""
    return ("accept-language", i18n.bcp47(i18n.current_language()))


def call_metadata() -> tuple[tuple[str, str], ...]:
    """What every call of a command-line tool carries: the token in
    EAP_TOKEN, if any (for a server with EAP_AUTH_MODE=jwt), and the
    reader's language."""
    token = os.environ.get("EAP_TOKEN")
    asked = (("authorization", f"Bearer {token}"),) if token else ()
    return (*asked, accept_language())


def _asking(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if "accept-language" not in metadata:
        metadata.add(*accept_language())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class AcceptLanguage(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A channel interceptor: every call asks for the current language."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_asking(details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_asking(details), request)


def refusal_words(error: grpc.RpcError) -> str:
    """What a refusal says to a person: its LocalizedMessage, else its
    status message."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.LocalizedMessage.DESCRIPTOR):
            words = error_details_pb2.LocalizedMessage()
            detail.Unpack(words)
            return str(words.message)
    details = error.details() if hasattr(error, "details") else None
    return str(details or "")
