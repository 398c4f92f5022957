"""Errors that services raise, free of gRPC; `status.py` turns them into statuses.

Messages are read by people and land in logs: they name rules, fields and
amounts, never a person or an employee id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class ConfigError(Exception):
    """A configuration variable is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class ServiceError(Exception):
    """An expected refusal, reported to the caller with a clear status."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(ServiceError):
    """One or more request fields are malformed (INVALID_ARGUMENT)."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = list(violations)

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class FailedPrecondition(ServiceError):
    """A business rule blocks the request (FAILED_PRECONDITION).

    `rule` is a stable upper-case code a client can switch on; `subject` says
    what it applies to (`agency/PT-HR`, `employee`); `left` carries what
    remains, as strings, for the google.rpc.ErrorInfo metadata.
    """

    def __init__(
        self, rule: str, subject: str, message: str, left: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.subject = subject
        self.left = dict(left or {})


class NotFound(ServiceError):
    """The named thing does not exist (NOT_FOUND)."""


class AlreadyExists(ServiceError):
    """An idempotency key or unique name is taken by something else (ALREADY_EXISTS)."""


class Unauthenticated(ServiceError):
    """No valid credentials (UNAUTHENTICATED)."""


class PermissionDenied(ServiceError):
    """The caller's role may not do this (PERMISSION_DENIED)."""


class Unavailable(ServiceError):
    """A store the service needs is unreachable; retry later (UNAVAILABLE)."""


class Aborted(ServiceError):
    """A concurrent change won; retrying is safe (ABORTED)."""


class ResourceExhausted(ServiceError):
    """The caller went over its rate limit, or the service over its capacity;
    retry after `retry_seconds` (RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, retry_seconds: float) -> None:
        super().__init__(message)
        self.retry_seconds = retry_seconds
