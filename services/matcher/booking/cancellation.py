"""What a cancellation keeps of the caller's words: the reason is free text
and may name a person or a circumstance, so it is sealed with the data keys
(registry/directory.py) on the booking row, and the quota ledger and the
audit trail get a code instead."""

from __future__ import annotations

from cryptography.fernet import MultiFernet

from services.rules.codes import RuleCode

# The reasons the quota's ledger records for a release a cancellation made.
CANCELLED = RuleCode.BOOKING_CANCELLED.value
GROUP_CANCELLED = RuleCode.GROUP_SESSION_CANCELLED.value


def seal(keys: MultiFernet, reason: str) -> bytes | None:
    """The reason sealed under the newest data key; None when there is none."""
    return keys.encrypt(reason.encode("utf-8")) if reason.strip() else None
