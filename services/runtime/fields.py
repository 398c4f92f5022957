"""Checking request fields: collect every violation, then refuse once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from services.runtime.errors import FieldViolation, InvalidArgument

# Ids of agencies, providers, counselors and pseudonymous employees.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# Client-chosen idempotency keys (UUIDs and the like).
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)
