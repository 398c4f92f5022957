"""Turns a ServiceError into a gRPC status with google.rpc error details."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime import errors, i18n

# ErrorInfo.domain (AIP-193): the suite, as the mail and calendar ids name it.
DOMAIN = "eap-suite"
# A status travels in trailers, and clients drop trailers beyond 8 KiB (gRPC's
# default limit), the status with them: a refusal of a long request (thousands
# of bad fields, an id of kilobytes) must stay short enough to arrive.
MAX_MESSAGE_BYTES = 512
MAX_VIOLATIONS = 10
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 200

_CODES: list[tuple[type[errors.ServiceError], int]] = [
    (errors.InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.NotFound, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, code_pb2.ALREADY_EXISTS),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (errors.Unavailable, code_pb2.UNAVAILABLE),
    (errors.Aborted, code_pb2.ABORTED),
    (errors.ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
]


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _clipped(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, marked where cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."


def _message(error: errors.ServiceError) -> str:
    message = error.message
    if isinstance(error, errors.InvalidArgument) and len(error.violations) > MAX_VIOLATIONS:
        shown = "; ".join(f"{v.field}: {v.description}" for v in error.violations[:MAX_VIOLATIONS])
        message = f"{shown}; and {len(error.violations) - MAX_VIOLATIONS} more"
    return _clipped(message, MAX_MESSAGE_BYTES)


def localized(error: errors.ServiceError, code: int) -> error_details_pb2.LocalizedMessage:
    """The refusal in the caller's language (i18n.py): what its rule means
    to the person, or what its kind of refusal does."""
    language = i18n.current_language()
    rule = error.rule if isinstance(error, errors.FailedPrecondition) else ""
    words = i18n.explanation(rule, language)
    if words is None:
        words = i18n.translate(i18n.REFUSALS[code_pb2.Code.Name(code)], language)
        if isinstance(error, errors.InvalidArgument):
            separator = "、" if language == "zh_TW" else ", "
            fields = separator.join(v.field for v in error.violations[:MAX_VIOLATIONS])
            words = words.format(fields=_clipped(fields, MAX_MESSAGE_BYTES))
    return error_details_pb2.LocalizedMessage(locale=i18n.bcp47(language), message=words)


def to_status(error: errors.ServiceError) -> grpc.Status:
    code = next(c for kind, c in _CODES if isinstance(error, kind))
    status = status_pb2.Status(code=code, message=_message(error))
    status.details.append(_packed(localized(error, code)))
    if isinstance(error, errors.InvalidArgument):
        status.details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_clipped(v.field, MAX_FIELD_BYTES),
                            description=_clipped(v.description, MAX_DESCRIPTION_BYTES),
                        )
                        for v in error.violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    elif isinstance(error, errors.FailedPrecondition):
        status.details.append(
            _packed(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=error.rule,
                            subject=_clipped(error.subject, MAX_FIELD_BYTES),
                            description=status.message,
                        )
                    ]
                )
            )
        )
        status.details.append(
            _packed(
                error_details_pb2.ErrorInfo(reason=error.rule, domain=DOMAIN, metadata=error.left)
            )
        )
    elif isinstance(error, errors.ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_seconds))
        status.details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(status)


def internal_status(correlation_id: str) -> grpc.Status:
    """INTERNAL with nothing but an id to find the logged traceback by."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; correlation id {correlation_id}",
    )
    status.details.append(_packed(error_details_pb2.RequestInfo(request_id=correlation_id)))
    language = i18n.current_language()
    words = i18n.translate(i18n.REFUSALS["INTERNAL"], language)
    status.details.append(
        _packed(error_details_pb2.LocalizedMessage(locale=i18n.bcp47(language), message=words))
    )
    return rpc_status.to_status(status)


def from_call(error: grpc.aio.AioRpcError, service: str) -> errors.ServiceError:
    """What another of our services refused, as this service's own error:
    a rule it names (FAILED_PRECONDITION with its ErrorInfo reason) reaches
    our caller under the same name; one too busy passes on its retry hint;
    a service that did not answer, or failed, is UNAVAILABLE here."""
    code = error.code()
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return errors.FailedPrecondition(
                    info.reason, service, error.details() or info.reason, dict(info.metadata)
                )
        return errors.FailedPrecondition(
            service.upper(), service, error.details() or f"refused by {service}"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(f"{service}: {error.details()}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidArgument.single(service, error.details() or f"refused by {service}")
    if code in (grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS):
        return errors.Aborted(f"{service}: {error.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(
            f"the {service} service is busy; retry later", retry_delay(error) or 1.0
        )
    return errors.Unavailable(f"the {service} service did not answer; retry later")


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The seconds a refusal's RetryInfo asks the caller to wait; None without one."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None
