"""The audit trail: who read or disclosed which person's records, when, and
for what purpose; append-only and hash-chained.

Every entry carries the hash of the one before it, and its own hash covers
all its fields and that link, so editing an entry breaks its hash and
deleting one breaks the chain after it. A head row keeps the last number and
hash, so cutting entries off the end shows too. `verify` walks the chain and
names the first entry that does not hold (`eapctl audit verify`).

The hashes are keyed (HMAC-SHA256) with an audit key from a Secret
(EAP_AUDIT_KEYS_FILE), which the database never holds: whoever can write to
the database, but has not the key, cannot rewrite an entry and then
recompute the chain after it. Each entry names the key that signed it; the
file's first key signs, all of them verify. A new key is added in two
steps: first after the signing key on every replica, then moved first, so
that no replica ever meets a head signed by a key it does not have yet; old
keys stay until no entry names them. Development mode without a file signs
with a public key, as its other keys do.

The head is signed too, with the same keys: an HMAC over the trail's name,
the last number and hash and the key's id, written in the transaction of
every append. Without it the head would be a copy anyone could rewrite:
cutting the last entries off and copying the new last entry's number and
hash into the head, or emptying the trail and setting the head back to 0,
would leave a trail that looks whole. The migration that makes a trail
signs its empty head, so that even "nothing written yet" is a state only
the key holder can make, and there is never an unsigned head to go back to.
An append that finds the head not signed by a key it has writes an `alarm`
entry first, naming the head it found, before it signs the head again: the
evidence stays in the signed chain, and `verify` names it ever after. (So a
replica of the version before signed heads, still appending while the
upgrade to it runs, makes the next append write an alarm: upgrade with
those replicas stopped. The trails were signed before any release.)

What a signed head cannot prevent on its own is a replay: someone who kept
an earlier head row (its number, hash and signature are all valid), deletes
the entries after it and puts the old row back, leaves a shorter trail that
verifies. So where the service has Redis, every append also checkpoints the
head there (`Checkpoint`), outside the database and its credentials: the
checkpoint only moves forward, and `verify` reports a head behind it, a
trail whose entry at the checkpoint's number is not the one it recorded, and
(noted by Redis at the append) an entry written after the checkpoint that
does not follow it, which is how a replayed trail that grew again shows.
Residual risks, for the runbook: without Redis (the embedded SQLite set-up),
or if Redis is flushed, a replayed head is not detected; whoever can write
to both the database and Redis can replay both; and `verify` trusts the
keys file, so whoever holds the audit key can rewrite everything.

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
import logging
import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Column, Integer, MetaData, Select, String, Table, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import clock, metrics
from services.runtime.auth import SYSTEM_IDENTITY, current_identity
from services.runtime.database import is_retryable
from services.runtime.errors import ConfigError

GENESIS = "0" * 64
MAX_PURPOSE = 100
RECORD_CHARS = 200  # an entry's record and reference fields
MIN_KEY_BYTES = 32
DEV_AUDIT_KEY = hashlib.sha256(b"eap development audit key: public, never for real data").digest()
# An entry the trail writes itself when it finds its head not signed by a
# key it has (see the module's docstring).
ALARM_ACTION, ALARM_RECORD = "alarm", "audit-head"
# How `database.migrate` hands the migrations the audit keys (a loader, so
# that only a migration that signs reads the keys file).
KEYS_ATTRIBUTE = "eap_audit_keys"

log = logging.getLogger("eap.audit")

_purpose_var: ContextVar[str] = ContextVar("audit_purpose", default="")


def set_purpose(purpose: str) -> None:
    """The current call's purpose: printable, at most 100 characters."""
    cleaned = "".join(c for c in purpose if c.isprintable())[:MAX_PURPOSE]
    _purpose_var.set(cleaned)


def tables(prefix: str, keyed: bool = True, signed: bool = True) -> tuple[Table, Table]:
    """A trail's entries and head, for `prefix`'s database (`keyed`: entries
    name their key, `signed`: the head is signed, as they are now; both
    False: as the trails' first migration made them)."""
    metadata = MetaData()
    key_column = [Column("key_id", String(16), nullable=False)] if keyed else []
    signature_columns = (
        [
            Column("key_id", String(16), nullable=False),  # the audit key that signed it
            Column("signature", String(64), nullable=False),  # head_signature()
        ]
        if signed
        else []
    )
    entries = Table(
        f"{prefix}_audit",
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("recorded_at", String(32), nullable=False),  # ISO 8601, UTC: hashed as stored
        Column("actor", String(128), nullable=False),
        Column("role", String(16), nullable=False),
        Column("action", String(16), nullable=False),  # read, disclose, purge, alarm
        Column("record", String(RECORD_CHARS), nullable=False),  # e.g. case/K-1001
        Column("purpose", String(MAX_PURPOSE), nullable=False),
        Column("reference", String(RECORD_CHARS), nullable=False),  # legal reference or consent
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
        *signature_columns,
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


@dataclass(frozen=True)
class Signed:
    """A key holder's word that the trail reached entry `seq`, of hash
    `hash` (GENESIS for 0, the empty trail)."""

    seq: int
    hash: str
    key_id: str
    signature: str


@dataclass(frozen=True)
class Head:
    """Where a trail ends (the head row), and the signature that vouches for it."""

    last_seq: int
    last_hash: str
    key_id: str
    signature: str

    @property
    def signed(self) -> Signed:
        return Signed(self.last_seq, self.last_hash, self.key_id, self.signature)


class AuditKeys:
    """The HMAC keys of the trails, newest first: the first signs, all verify."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("no audit key")
        self._by_id = {self.id_of(key): key for key in keys}
        self.signing_id = self.id_of(keys[0])
        self.signing_key = keys[0]

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


def head_signature(trail: str, last_seq: int, last_hash: str, key_id: str, key: bytes) -> str:
    """The head's HMAC. The prefix sets it apart from every entry's hash (an
    entry's body is a JSON array, which never starts so), so that no entry's
    hash, which the database holds, can stand in for a head's signature; the
    trail's name keeps one trail's head from passing for another's."""
    body = json.dumps([trail, last_seq, last_hash, key_id])
    return hmac.new(key, b"eap audit head:" + body.encode(), hashlib.sha256).hexdigest()


def signed_head(trail: str, last_seq: int, last_hash: str, keys: AuditKeys) -> Head:
    signature = head_signature(trail, last_seq, last_hash, keys.signing_id, keys.signing_key)
    return Head(last_seq, last_hash, keys.signing_id, signature)


LACKING = "signed by an audit key this {} lacks"


def signature_fault(
    trail: str, signed: Signed, keys: AuditKeys, holder: str = "process"
) -> str | None:
    """Why `signed` is not a key holder's word; None when it is (`holder`:
    who lacks a key it names). Numbers only: this goes into entries."""
    key = keys.get(signed.key_id)
    if key is None:
        return LACKING.format(holder) if signed.key_id else "not signed"
    expected = head_signature(trail, signed.seq, signed.hash, signed.key_id, key)
    if not hmac.compare_digest(expected, signed.signature):
        return "signed with a signature that does not verify"
    return None


# Moves the checkpoint forward only, so that replicas' appends arriving out of
# order never set it back. When the new entry is the one right after the
# checkpoint, it must follow the checkpointed entry: if it does not, the
# trail was cut short and written again since, and the first entry found so
# is kept (SET NX) as evidence, whatever the checkpoint does afterwards.
_ADVANCE = """
local stored = redis.call('GET', KEYS[1])
local seq = tonumber(ARGV[1])
if stored then
  local old = cjson.decode(stored)
  if seq <= old.last_seq then
    return 0
  end
  if seq == old.last_seq + 1 and ARGV[3] ~= old.last_hash then
    redis.call('SET', KEYS[2], ARGV[1], 'NX')
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class Checkpoint:
    """The newest signed head of a trail, kept in Redis, outside the
    database: a head row put back from earlier shows as behind it.
    Best effort: an append whose checkpoint fails is still written (the
    checkpoint then lags, which `verify` allows), and so is one made
    without Redis (`eapctl retention purge`)."""

    def __init__(self, redis: Redis, trail: str, scope: str = "") -> None:
        self._redis = redis
        self._trail = trail
        # `scope` keeps apart deployments (and tests) that share one Redis.
        self._key = f"eap:{trail}:audit-checkpoint" + (f":{scope}" if scope else "")
        self._forked_key = f"{self._key}:forked"

    async def advance(self, head: Signed, prev_hash: str) -> None:
        """Records `head`, the head after an append whose entry followed
        `prev_hash`."""
        value = json.dumps(
            {
                "last_seq": head.seq,
                "last_hash": head.hash,
                "key_id": head.key_id,
                "signature": head.signature,
            }
        )
        try:
            await self._redis.eval(
                _ADVANCE, 2, self._key, self._forked_key, head.seq, value, prev_hash
            )
        except (RedisError, OSError):
            metrics.STORE_ERRORS.labels(self._trail, "redis").inc()
            log.warning("audit checkpoint not written: redis unreachable")

    async def read(self) -> tuple[Signed | None, int | None]:
        """The checkpointed head (None: none yet), and the entry found not
        to follow it (None: none)."""
        stored, forked = await self._redis.mget(self._key, self._forked_key)
        head = None
        if stored is not None:
            try:
                fields = json.loads(stored)
                head = Signed(
                    int(fields["last_seq"]),
                    str(fields["last_hash"]),
                    str(fields["key_id"]),
                    str(fields["signature"]),
                )
            except (ValueError, KeyError, TypeError):
                head = Signed(0, "", "", "")  # fails its signature check in verify
        return head, int(forked) if forked is not None else None


@dataclass(frozen=True)
class _Appended:
    head: Signed  # the new head
    prev_hash: str  # what the last entry written follows
    fault: str | None  # what was wrong with the head found, if anything


class AuditTrail:
    def __init__(
        self,
        engine: AsyncEngine,
        prefix: str,
        keys: AuditKeys,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._engine = engine
        self.name = prefix
        self._keys = keys
        self._checkpoint = checkpoint
        self._entries, self._head = tables(prefix)

    async def record_reads(self, kind: str, ids: Sequence[str]) -> None:
        """A read of the records `ids` (of `kind`, e.g. "cases"), naming every
        one: as many entries as their ids take, each `<kind> id,id,...`
        within an entry's record field. Nothing read, one entry saying so,
        so that the read itself is on file."""
        prefix = f"{kind} "
        chunk: list[str] = []
        size = len(prefix)
        for record_id in ids:
            if chunk and size + len(record_id) + 1 > RECORD_CHARS:
                await self.record("read", prefix + ",".join(chunk))
                chunk, size = [], len(prefix)
            chunk.append(record_id)
            size += len(record_id) + 1
        await self.record("read", prefix + (",".join(chunk) if chunk else "(none)"))

    async def record(self, action: str, record: str, reference: str = "") -> None:
        """Appends one entry for the current caller and purpose."""
        identity = current_identity()
        fields: dict[str, object] = {
            "recorded_at": clock.now().isoformat(timespec="microseconds"),
            "actor": identity.subject[:128],
            "role": identity.role.value,
            "action": action,
            "record": record[:RECORD_CHARS],
            "purpose": _purpose_var.get() or "unstated",
            "reference": reference[:RECORD_CHARS],
            "key_id": self._keys.signing_id,
        }
        for attempt in range(5):
            try:
                async with self._engine.begin() as connection:
                    appended = await self._append(connection, fields)
                break
            except DBAPIError as error:
                if attempt == 4 or not is_retryable(error):
                    raise
        if appended.fault is not None:
            # Numbers only: which entry holds the alarm, not whose read it was.
            log.error(
                "audit head did not verify: an alarm entry was written",
                extra={"trail": self.name, "seq": appended.head.seq - 1},
            )
        if self._checkpoint is not None:
            await self._checkpoint.advance(appended.head, appended.prev_hash)

    async def _append(self, connection: AsyncConnection, fields: dict[str, object]) -> _Appended:
        row = (await connection.execute(self._select_head().with_for_update())).first()
        if row is None:
            raise RuntimeError(f"{self.name} audit trail has no head row: run the migrations")
        found = Head(*row)
        # Signing a head that no key holder wrote would bless whatever was
        # done to the trail; so the entry before this one says what was found.
        fault = signature_fault(self.name, found.signed, self._keys, "replica")
        last_seq, last_hash = found.last_seq, found.last_hash
        if fault is not None:
            alarm = {
                **fields,
                "actor": SYSTEM_IDENTITY.subject,
                "role": SYSTEM_IDENTITY.role.value,
                "action": ALARM_ACTION,
                "record": ALARM_RECORD,
                "purpose": "audit head check",
                "reference": f"the head at {last_seq} was {fault}",
            }
            last_seq, last_hash = await self._insert(connection, alarm, last_seq, last_hash)
        prev_hash = last_hash
        last_seq, last_hash = await self._insert(connection, fields, last_seq, last_hash)
        head = signed_head(self.name, last_seq, last_hash, self._keys)
        await connection.execute(
            update(self._head)
            .where(self._head.c.id == 1)
            .values(
                last_seq=head.last_seq,
                last_hash=head.last_hash,
                key_id=head.key_id,
                signature=head.signature,
            )
        )
        return _Appended(head.signed, prev_hash, fault)

    def _select_head(self) -> Select[int, str, str, str]:
        head = self._head.c
        return select(head.last_seq, head.last_hash, head.key_id, head.signature).where(
            head.id == 1
        )

    async def _insert(
        self, connection: AsyncConnection, fields: dict[str, object], last_seq: int, last_hash: str
    ) -> tuple[int, str]:
        entry = {**fields, "seq": last_seq + 1}
        digest = entry_hash(entry, last_hash, self._keys.signing_key)
        await connection.execute(
            insert(self._entries).values(**entry, prev_hash=last_hash, hash=digest)
        )
        return last_seq + 1, digest

    async def entries(self, after: int, limit: int, upto: int | None = None) -> list[AuditEntry]:
        """Up to `limit` entries after number `after` (and up to `upto`)."""
        query = select(self._entries).where(self._entries.c.seq > after)
        if upto is not None:
            query = query.where(self._entries.c.seq <= upto)
        async with self._engine.connect() as connection:
            rows = await connection.execute(query.order_by(self._entries.c.seq).limit(limit))
            return [AuditEntry(**row._mapping) for row in rows]

    async def verify(self) -> list[str]:
        """Every break in the chain, each naming its entry; empty when intact."""
        # Read in the order the appends write (entries and head in one
        # transaction, then the checkpoint), so that appends made meanwhile
        # put nothing in front of what was read: the checkpoint is never
        # ahead of the head, nor the head of the entries, unless cut.
        problems: list[str] = []
        checkpoint, forked_at = None, None
        if self._checkpoint is not None:
            try:
                checkpoint, forked_at = await self._checkpoint.read()
            except (RedisError, OSError):
                problems.append(
                    f"{self.name} audit checkpoint outside the database: unreadable (Redis "
                    "unreachable), so a head put back from earlier would not show"
                )
        async with self._engine.connect() as connection:
            row = (await connection.execute(self._select_head())).first()
        head = Head(*row) if row is not None else Head(0, GENESIS, "", "")
        fault = signature_fault(self.name, head.signed, self._keys, "verifier")
        if row is None:
            problems.append(f"{self.name} audit trail: the head row is missing")
        elif fault == LACKING.format("verifier"):  # as for an entry: a key dropped too soon
            problems.append(f"{self.name} audit head: {fault}")
        elif fault is not None:
            problems.append(
                f"{self.name} audit head: {fault}: it was rewritten without the audit key "
                "(the trail may have been cut short or emptied)"
            )
        # The hash of the entry the checkpoint names, as the walk finds it.
        checkpointed = GENESIS if checkpoint is not None and checkpoint.seq == 0 else None
        expected_seq, prev = 1, GENESIS
        after = 0
        while True:
            # Up to the head: entries appended after it was read wait for the
            # next run.
            page = await self.entries(after, 5000, upto=head.last_seq)
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
                elif (entry.action, entry.record) == (ALARM_ACTION, ALARM_RECORD):
                    problems.append(
                        f"{label}: written because {entry.reference}: the entries after that "
                        "may have been cut off before it (or an audit key was rotated in one step)"
                    )
                if checkpoint is not None and entry.seq == checkpoint.seq:
                    checkpointed = entry.hash
                expected_seq, prev = entry.seq + 1, entry.hash
            if len(page) < 5000:
                break
            after = page[-1].seq
        if (head.last_seq, head.last_hash) != (expected_seq - 1, prev):
            if head.last_seq > expected_seq - 1:
                problems.append(
                    f"{self.name} audit trail: entries after {expected_seq - 1} are missing "
                    f"(the head records {head.last_seq})"
                )
            else:
                problems.append(
                    f"{self.name} audit trail: the head records {head.last_seq}, "
                    "not the last entry's hash"
                )
        if checkpoint is not None:
            problems += self._against_checkpoint(checkpoint, checkpointed, head)
        if forked_at is not None:
            problems.append(
                f"{self.name} audit entry {forked_at}: when it was written it did not follow "
                "the entry checkpointed outside the database: the trail had been cut short "
                "and grew again"
            )
        return problems

    def _against_checkpoint(
        self, checkpoint: Signed, checkpointed: str | None, head: Head
    ) -> list[str]:
        """What the head and entries say against the checkpoint outside the
        database (`checkpointed`: the hash of the entry it names, as found;
        None when there is none)."""
        if signature_fault(self.name, checkpoint, self._keys) is not None:
            return [
                f"{self.name} audit checkpoint outside the database: not signed with the "
                "audit key (it was written by someone else)"
            ]
        if checkpoint.seq > head.last_seq:
            return [
                f"{self.name} audit trail: entries after {head.last_seq} are missing: the "
                f"checkpoint outside the database records {checkpoint.seq} (an earlier "
                "head was put back)"
            ]
        if checkpointed is not None and checkpointed != checkpoint.hash:
            return [
                f"{self.name} audit entry {checkpoint.seq}: not the entry the checkpoint "
                "outside the database recorded: the trail was cut short and written again"
            ]
        return []


def migration_attributes(keys_file: str | None, development: bool) -> dict[str, object]:
    """What `database.migrate` gives the migrations: the audit keys, as a
    loader that only a migration signing a head calls."""
    loader: Callable[[], AuditKeys] = partial(AuditKeys.load, keys_file, development)
    return {KEYS_ATTRIBUTE: loader}


def _keys_for_migration() -> AuditKeys:
    from alembic import context

    load = context.config.attributes.get(KEYS_ATTRIBUTE)
    if load is None:  # the `alembic` command line: the environment's keys
        mode = os.environ.get("EAP_AUTH_MODE", "dev")
        return AuditKeys.load(os.environ.get("EAP_AUDIT_KEYS_FILE") or None, mode == "dev")
    keys = load()
    assert isinstance(keys, AuditKeys)
    return keys


def create_in_migration(prefix: str) -> None:
    """Creates a trail's tables and its head row; for a service's migration.
    The head is signed by `sign_heads_in_migration`, in the same upgrade."""
    from alembic import op

    entries, head = tables(prefix, keyed=False, signed=False)
    bind = op.get_bind()
    entries.create(bind)
    head.create(bind)
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS}])


def drop_in_migration(prefix: str) -> None:
    from alembic import op

    entries, head = tables(prefix, keyed=False, signed=False)
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


def sign_heads_in_migration(prefix: str) -> None:
    """Adds the head's key and signature and signs the head as it stands,
    with the keys the migration is given (`migration_attributes`): a new
    trail's empty head, or an existing trail's end. An existing head is
    signed as found, not as the entries end, so that a cut it already shows
    stays shown."""
    import sqlalchemy as sa
    from alembic import op

    name = f"{prefix}_audit_head"
    op.add_column(name, sa.Column("key_id", sa.String(16), nullable=False, server_default=""))
    op.add_column(name, sa.Column("signature", sa.String(64), nullable=False, server_default=""))
    keys = _keys_for_migration()
    _, head = tables(prefix)
    bind = op.get_bind()
    for row_id, last_seq, last_hash in bind.execute(
        select(head.c.id, head.c.last_seq, head.c.last_hash)
    ).all():
        signed = signed_head(prefix, last_seq, last_hash, keys)
        bind.execute(
            update(head)
            .where(head.c.id == row_id)
            .values(key_id=signed.key_id, signature=signed.signature)
        )


def drop_head_signatures_in_migration(prefix: str) -> None:
    from alembic import op

    with op.batch_alter_table(f"{prefix}_audit_head") as batch:
        batch.drop_column("signature")
        batch.drop_column("key_id")
