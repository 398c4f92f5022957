"""The one place that knows who the pseudonymous ids are: names and
contact details, encrypted at rest.

Every other table and service works on pseudonymous employee ids. Here each
person's name, phone and e-mail are sealed together with Fernet
(`cryptography`: AES-128-CBC and an HMAC-SHA256 tag) under the data keys in
EAP_DATA_KEYS_FILE, one key per line: the first seals, all open, so a new
key goes first and old rows stay readable until `reseal` moves them over. A
stolen database or backup holds only ciphertext. Reading someone's contact
is for them, an administrator, or a counselor who holds a session with
them (policy.py), and is written to the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.store import live
from services.matcher.orm import BookingRow, PersonRow
from services.runtime import clock, policy
from services.runtime.audit import AuditTrail
from services.runtime.errors import ConfigError, NotFound, PermissionDenied
from services.runtime.fields import FieldChecker

# Development mode's key is public, so that a laptop or the dev overlay
# needs no Secret and keeps its data across restarts: development mode is
# for trial data only, as its authentication already says.
DEV_DATA_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"eap development data key: public, never for real data").digest()
)


def load_keys(path: str | None, development: bool) -> MultiFernet:
    """The data keys from `path`, one per line, newest first; development
    mode without a file uses the public development key."""
    if path is None:
        if not development:
            raise ConfigError("EAP_DATA_KEYS_FILE", "is required when EAP_AUTH_MODE=jwt")
        return MultiFernet([Fernet(DEV_DATA_KEY)])
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        raise ConfigError("EAP_DATA_KEYS_FILE", "names no readable file") from None
    try:
        return MultiFernet([Fernet(line) for line in lines])
    except ValueError:
        raise ConfigError(
            "EAP_DATA_KEYS_FILE", "must hold Fernet keys, one per line, newest first"
        ) from None


@dataclass(frozen=True)
class Contact:
    name: str
    phone: str
    email: str


def _check(contact: Contact, checker: FieldChecker) -> None:
    checker.require(0 < len(contact.name.strip()) <= 200, "contact.name", "1 to 200 characters")
    checker.text(contact.phone, "contact.phone", 40)
    checker.text(contact.email, "contact.email", 254)
    checker.require(
        not contact.email or ("@" in contact.email and " " not in contact.email),
        "contact.email",
        "an e-mail address",
    )


def _no_contact() -> NotFound:
    return NotFound("employee_id names no one in the directory")


class Directory:
    def __init__(self, engine: AsyncEngine, keys: MultiFernet, audit: AuditTrail | None) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._keys = keys
        self._audit = audit

    async def set_contact(self, employee_id: str, contact: Contact) -> None:
        checker = FieldChecker()
        checker.identifier(employee_id, "employee_id")
        _check(contact, checker)
        checker.raise_if_any()
        policy.require_own(
            PermissionDenied("people keep only their own contact details"),
            employee_id=employee_id,
        )
        sealed = self._keys.encrypt(json.dumps(contact.__dict__).encode())
        async with self._sessions() as session, session.begin():
            row = await session.get(PersonRow, employee_id, with_for_update=True)
            if row is None:
                session.add(
                    PersonRow(employee_id=employee_id, sealed=sealed, updated_at=clock.now())
                )
            else:
                row.sealed, row.updated_at = sealed, clock.now()

    async def contact(self, employee_id: str) -> Contact:
        checker = FieldChecker()
        checker.identifier(employee_id, "employee_id")
        checker.raise_if_any()
        now = clock.now()
        async with self._sessions() as session:
            counselors = set(
                await session.scalars(
                    select(BookingRow.counselor_id).where(
                        BookingRow.employee_id == employee_id, live(now)
                    )
                )
            )
            policy.require_own(_no_contact(), employee_id=employee_id, counselor_ids=counselors)
            row = await session.get(PersonRow, employee_id)
        if row is None:
            raise _no_contact()
        if self._audit is not None:
            await self._audit.record("read", f"contact/{employee_id}")
        return Contact(**self._open(row))

    async def address_for_notice(self, employee_id: str) -> str:
        """The e-mail address a notification goes to ("" if none is kept),
        for the notifier alone (services/notifier), which runs as the
        system, not as a caller; the read is audited like any other."""
        async with self._sessions() as session:
            row = await session.get(PersonRow, employee_id)
        if row is None:
            return ""
        if self._audit is not None:
            await self._audit.record("read", f"contact/{employee_id}")
        return str(self._open(row).get("email", ""))

    def _open(self, row: PersonRow) -> dict[str, str]:
        try:
            opened: dict[str, str] = json.loads(self._keys.decrypt(row.sealed))
        except InvalidToken:
            raise ConfigError(
                "EAP_DATA_KEYS_FILE", "holds no key that opens this row (a key was removed)"
            ) from None
        return opened

    async def reseal(self) -> int:
        """Seals every row under the first key (after a new one was added)."""
        count = 0
        async with self._sessions() as session, session.begin():
            for row in await session.scalars(select(PersonRow).with_for_update()):
                row.sealed = self._keys.rotate(row.sealed)
                count += 1
        return count
