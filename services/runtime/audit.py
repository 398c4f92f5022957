"""The audit trail: who read or disclosed which person's records, when, and
for what purpose; append-only and hash-chained.

Every entry carries the hash of the one before it, and its own hash covers
all its fields and that link, so editing an entry breaks its hash and
deleting one breaks the chain after it; a head row keeps the last number and
hash, so cutting entries off the end shows too. `verify` walks the chain and
names the first entry that does not hold (`eapctl audit verify`).

Appends are serialised on the head row (`FOR UPDATE` on PostgreSQL; SQLite
runs one write transaction at a time), so the chain never forks however
many replicas append. Each service that keeps case-level data has its own
trail in its own database: `matcher_audit`, `quota_audit`.

The caller and the purpose come from the call: the identity the
interceptor established, and the purpose the client states in the
`x-eap-purpose` header (the RPC's name when it states none).
"""

from __future__ import annotations

import hashlib
import json
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import clock
from services.runtime.auth import current_identity
from services.runtime.database import is_retryable

GENESIS = "0" * 64
MAX_PURPOSE = 100

_purpose_var: ContextVar[str] = ContextVar("audit_purpose", default="")


def set_purpose(purpose: str) -> None:
    """The current call's purpose: printable, at most 100 characters."""
    cleaned = "".join(c for c in purpose if c.isprintable())[:MAX_PURPOSE]
    _purpose_var.set(cleaned)


def tables(prefix: str) -> tuple[Table, Table]:
    """A trail's entries and head, for `prefix`'s database."""
    metadata = MetaData()
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


FIELDS = ("seq", "recorded_at", "actor", "role", "action", "record", "purpose", "reference")


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
    prev_hash: str
    hash: str


def entry_hash(fields: dict[str, object], prev_hash: str) -> str:
    body = json.dumps([fields[name] for name in FIELDS] + [prev_hash], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


class AuditTrail:
    def __init__(self, engine: AsyncEngine, prefix: str) -> None:
        self._engine = engine
        self.name = prefix
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
        digest = entry_hash(entry, last_hash)
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
                fields = {name: getattr(entry, name) for name in FIELDS}
                if entry_hash(fields, entry.prev_hash) != entry.hash:
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

    entries, head = tables(prefix)
    bind = op.get_bind()
    entries.create(bind)
    head.create(bind)
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}])


def drop_in_migration(prefix: str) -> None:
    from alembic import op

    entries, head = tables(prefix)
    head.drop(op.get_bind())
    entries.drop(op.get_bind())
