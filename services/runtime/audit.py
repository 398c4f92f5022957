"""The audit trail: who read or disclosed which person's records, when, and
for what purpose; append-only and hash-chained.

Every entry carries the hash of the one before it, and its own hash covers
all its fields and that link, so editing an entry breaks its hash and
deleting one breaks the chain after it; a head row keeps the last number and
hash, so cutting entries off the end shows too. `verify` walks the chain and
names the first entry that does not hold (`eapctl audit verify`).

The hashes are keyed (HMAC-SHA256) with an audit key from a Secret
(EAP_AUDIT_KEYS_FILE), which the database never holds: whoever can write to
the database, but has not the key, cannot rewrite an entry and then
recompute the chain after it. Each entry names the key that signed it; the
file's first key signs, all of them verify, so a new key goes first and the
old ones stay until no entry names them. Development mode without a file
signs with a public key, as its other keys do.

Appends are serialised on the head row (`FOR UPDATE` on PostgreSQL; SQLite
runs one write transaction at a time), so the chain never forks however
many replicas append. Each service that keeps case-level data has its own
trail in its own database: `matcher_audit`, `quota_audit`.

The caller and the purpose come from the call: the identity the
interceptor established, and the purpose the client states in the
`x-eap-purpose` header (the RPC's name when it states none).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import clock
from services.runtime.auth import current_identity
from services.runtime.database import is_retryable
from services.runtime.errors import ConfigError

GENESIS = "0" * 64
MAX_PURPOSE = 100
MIN_KEY_BYTES = 32
DEV_AUDIT_KEY = hashlib.sha256(b"eap development audit key: public, never for real data").digest()

_purpose_var: ContextVar[str] = ContextVar("audit_purpose", default="")


def set_purpose(purpose: str) -> None:
    """The current call's purpose: printable, at most 100 characters."""
    cleaned = "".join(c for c in purpose if c.isprintable())[:MAX_PURPOSE]
    _purpose_var.set(cleaned)


def tables(prefix: str, keyed: bool = True) -> tuple[Table, Table]:
    """A trail's entries and head, for `prefix`'s database (`keyed`: as they
    are now; else as the trails' first migration made them)."""
    metadata = MetaData()
    key_column = [Column("key_id", String(16), nullable=False)] if keyed else []
    entries = Table(
        f"{prefix}_audit",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("recorded_at", String(32), nullable=False),  # ISO 8601, UTC: hashed as stored
        Column("actor", String(128), nullable=False),
        Column("role", String(16), nullable=False),
        Column("action", String(16), nullable=False),  # read, disclose, purge
        Column("record", String(200), nullable=False),  # e.g. case/K-1001
        Column("purpose", String(MAX_PURPOSE), nullable=False),
        Column("reference", String(200), nullable=False),  # legal reference or consent
        *key_column,  # the audit key that signed it
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )
    head = Table(
        f"{prefix}_audit_head",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("last_seq", Integer, nullable=False),
        Column("last_hash", String(64), nullable=False),
    )
    return entries, head


FIELDS = (
    "seq",
    "recorded_at",
    "actor",
    "role",
    "action",
    "record",
    "purpose",
    "reference",
    "key_id",
)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    recorded_at: str
    actor: str
    role: str
    action: str
    record: str
    purpose: str
    reference: str
    key_id: str
    prev_hash: str
    hash: str


class AuditKeys:
    """The HMAC keys of the trails, newest first: the first signs, all verify."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("no audit key")
        self._by_id = {self.id_of(key): key for key in keys}
        self.signing_id = self.id_of(keys[0])

    @staticmethod
    def id_of(key: bytes) -> str:
        """A key's name in the entries it signs: a digest, never the key."""
        return hashlib.sha256(b"eap audit key id:" + key).hexdigest()[:16]

    def get(self, key_id: str) -> bytes | None:
        return self._by_id.get(key_id)

    @classmethod
    def load(cls, path: str | None, development: bool) -> AuditKeys:
        """The keys in `path`, one base64 key of 32 bytes or more per line,
        newest first; development mode without a file: the public key."""
        if path is None:
            if not development:
                raise ConfigError("EAP_AUDIT_KEYS_FILE", "is required when EAP_AUTH_MODE=jwt")
            return cls([DEV_AUDIT_KEY])
        try:
            lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError:
            raise ConfigError("EAP_AUDIT_KEYS_FILE", "names no readable file") from None
        try:
            keys = [base64.urlsafe_b64decode(line) for line in lines]
        except (binascii.Error, ValueError):
            keys = []
        if not keys or any(len(key) < MIN_KEY_BYTES for key in keys):
            raise ConfigError(
                "EAP_AUDIT_KEYS_FILE",
                f"must hold base64 keys of {MIN_KEY_BYTES} bytes or more, one per line, "
                "newest first (`eapctl token audit-key` makes one)",
            )
        return cls(keys)


def entry_hash(fields: dict[str, object], prev_hash: str, key: bytes) -> str:
    body = json.dumps([fields[name] for name in FIELDS] + [prev_hash], ensure_ascii=False)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


class AuditTrail:
    def __init__(self, engine: AsyncEngine, prefix: str, keys: AuditKeys) -> None:
        self._engine = engine
        self.name = prefix
        self._keys = keys
        self._entries, self._head = tables(prefix)

    async def record(self, action: str, record: str, reference: str = "") -> None:
        """Appends one entry for the current caller and purpose."""
        identity = current_identity()
        fields: dict[str, object] = {
            "recorded_at": clock.now().isoformat(timespec="microseconds"),
            "actor": identity.subject[:128],
            "role": identity.role.value,
            "action": action,
            "record": record[:200],
            "purpose": _purpose_var.get() or "unstated",
            "reference": reference[:200],
            "key_id": self._keys.signing_id,
        }
        for attempt in range(5):
            try:
                async with self._engine.begin() as connection:
                    await self._append(connection, fields)
                return
            except DBAPIError as error:
                if attempt == 4 or not is_retryable(error):
                    raise

    async def _append(self, connection: AsyncConnection, fields: dict[str, object]) -> None:
        head = (
            await connection.execute(
                select(self._head.c.last_seq, self._head.c.last_hash)
                .where(self._head.c.id == 1)
                .with_for_update()
            )
        ).first()
        if head is None:
            raise RuntimeError(f"{self.name} audit trail has no head row: run the migrations")
        last_seq, last_hash = head
        entry = {**fields, "seq": last_seq + 1}
        signing_key = self._keys.get(self._keys.signing_id)
        assert signing_key is not None
        digest = entry_hash(entry, last_hash, signing_key)
        await connection.execute(
            insert(self._entries).values(**entry, prev_hash=last_hash, hash=digest)
        )
        await connection.execute(
            update(self._head)
            .where(self._head.c.id == 1)
            .values(last_seq=last_seq + 1, last_hash=digest)
        )

    async def entries(self, after: int, limit: int) -> list[AuditEntry]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(self._entries)
                .where(self._entries.c.seq > after)
                .order_by(self._entries.c.seq)
                .limit(limit)
            )
            return [AuditEntry(**row._mapping) for row in rows]

    async def verify(self) -> list[str]:
        """Every break in the chain, each naming its entry; empty when intact."""
        problems: list[str] = []
        expected_seq, prev = 1, GENESIS
        after = 0
        while True:
            page = await self.entries(after, 5000)
            for entry in page:
                label = f"{self.name} audit entry {entry.seq}"
                if entry.seq != expected_seq:
                    problems.append(
                        f"{self.name} audit entries {expected_seq}-{entry.seq - 1} are missing"
                    )
                elif entry.prev_hash != prev:
                    problems.append(f"{label}: does not follow the entry before it")
                key = self._keys.get(entry.key_id)
                fields = {name: getattr(entry, name) for name in FIELDS}
                if key is None:
                    problems.append(f"{label}: signed by an audit key this verifier lacks")
                elif not hmac.compare_digest(entry_hash(fields, entry.prev_hash, key), entry.hash):
                    problems.append(f"{label}: its content was changed after it was written")
                expected_seq, prev = entry.seq + 1, entry.hash
            if len(page) < 5000:
                break
            after = page[-1].seq
        async with self._engine.connect() as connection:
            head = (
                await connection.execute(
                    select(self._head.c.last_seq, self._head.c.last_hash).where(
                        self._head.c.id == 1
                    )
                )
            ).first()
        last_seq, last_hash = head if head is not None else (0, GENESIS)
        if (last_seq, last_hash) != (expected_seq - 1, prev):
            problems.append(
                f"{self.name} audit trail: entries after {expected_seq - 1} are missing "
                f"(the head records {last_seq})"
            )
        return problems


def create_in_migration(prefix: str) -> None:
    """Creates a trail's tables and its head row; for a service's migration."""
    from alembic import op

    entries, head = tables(prefix, keyed=False)
    bind = op.get_bind()
    entries.create(bind)
    head.create(bind)
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}])


def drop_in_migration(prefix: str) -> None:
    from alembic import op

    entries, head = tables(prefix, keyed=False)
    head.drop(op.get_bind())
    entries.drop(op.get_bind())


def add_key_ids_in_migration(prefix: str) -> None:
    """Adds the key column to a trail made before the trails were keyed.
    Entries written before have none and fail verification, as any entry
    not signed by a key would: the trails were keyed before any release."""
    import sqlalchemy as sa
    from alembic import op

    op.add_column(
        f"{prefix}_audit", sa.Column("key_id", sa.String(16), nullable=False, server_default="")
    )


def drop_key_ids_in_migration(prefix: str) -> None:
    from alembic import op

    with op.batch_alter_table(f"{prefix}_audit") as batch:
        batch.drop_column("key_id")
