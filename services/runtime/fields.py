"""Checking request fields: collect every violation, then refuse once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.runtime.errors import FieldViolation, InvalidArgument

# Ids of agencies, providers, counselors and pseudonymous employees.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# Client-chosen idempotency keys (UUIDs and the like).
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The times a request may name: far wider than any session or plan, and
# narrow enough that adding weeks, a year or a time zone stays within what
# `datetime` can hold (a Timestamp reaches 9999-12-31).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass
class FieldChecker:
    """Collects every field violation of a request before refusing it."""

    violations: list[FieldViolation] = field(default_factory=list)

    def require(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.violations.append(FieldViolation(field, description))

    def identifier(self, value: str, field: str) -> None:
        self.require(
            bool(ID_PATTERN.match(value)),
            field,
            "required: 1-64 letters, digits or . _ : - (starting with a letter or digit)",
        )

    def idempotency_key(self, value: str, field: str = "idempotency_key") -> None:
        self.require(
            bool(KEY_PATTERN.match(value)), field, "required: 1-128 letters, digits or . _ : -"
        )

    def date(self, value: str, field: str) -> date | None:
        """`value` as a calendar day, or None (and a violation) when it is not one."""
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.require(False, field, "a date, YYYY-MM-DD")
            return None

    def text(self, value: str, field: str, limit: int = 500) -> None:
        self.require(len(value) <= limit, field, f"at most {limit} characters")

    def moment(self, stamp: Timestamp, field: str) -> datetime:
        """`stamp` as an aware UTC time; a violation (and EARLIEST in its
        place) when it is no valid Timestamp or lies outside 1900-2200."""
        try:
            moment = stamp.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):  # seconds or nanos out of range
            moment = None
        if moment is None or not EARLIEST <= moment < LATEST:
            self.require(False, field, "a time between the years 1900 and 2200")
            return EARLIEST
        return moment

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)


def moment(stamp: Timestamp, field: str) -> datetime:
    """`stamp` as an aware UTC time, or INVALID_ARGUMENT naming `field`."""
    checker = FieldChecker()
    value = checker.moment(stamp, field)
    checker.raise_if_any()
    return value


def timestamp(moment: datetime) -> Timestamp:
    """An aware time as a Timestamp (the way back from `moment`)."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
