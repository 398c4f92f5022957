"""The audit trail: every read of a person's records is written down (who,
when, which record, for what), the chain of hashes shows any entry changed
or removed, and `eapctl audit verify` names it."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from alembic import command
from redis.asyncio import Redis
from sqlalchemy import Connection, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime.audit import (
    DEV_AUDIT_KEY,
    GENESIS,
    AuditKeys,
    AuditTrail,
    Checkpoint,
    entry_hash,
    migration_attributes,
    signed_head,
    tables,
)
from services.runtime.auth import Identity, Role, set_identity
from services.runtime.database import alembic_config, create_engine, migrate, scope_of
from services.runtime.errors import ConfigError
from services.runtime.server import start
from tests.access import Secured
from tests.conftest import Backend, Suite
from tests.county import account
from tests.matcher.test_booking import case, submit
from tests.quota.test_rpcs import refused as refused_call
from tests.runtime.test_access import submit_own
from tests.stores import sign_audit_heads

EAPCTL = str(Path(sys.executable).with_name("eapctl"))


def trail_of(suite: Suite, name: str) -> AuditTrail:
    assert suite.server is not None
    (service,) = [s for s in suite.server.services if s.name == name]
    trail = getattr(service, "audit", None)
    assert isinstance(trail, AuditTrail)
    return trail


async def test_reads_of_a_case_are_recorded_with_who_and_why(secured_suite: Secured) -> None:
    suite = secured_suite
    employee = suite.as_("employee", "E1")
    k1 = await submit_own(suite, "K1", "E1")
    await suite.matcher.GetCase(
        mpb.GetCaseRequest(case_id=k1),
        metadata=(*employee, ("x-eap-purpose", "checking my next session")),
    )
    admin = suite.as_("admin", "eap-admin-7")
    await suite.matcher.GetCase(mpb.GetCaseRequest(case_id=k1), metadata=admin)
    await suite.quota.GetBalance(
        qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR")), metadata=admin
    )  # an aggregate: not a person's record
    auditor = audit_pb2_grpc.AuditServiceStub(suite.channel)
    as_auditor = suite.as_("auditor", "audit-1")
    listed = await auditor.ListAuditEntries(
        apb.ListAuditEntriesRequest(trail="matcher"), metadata=as_auditor
    )
    reads = [(e.actor, e.role, e.action, e.record, e.purpose) for e in listed.entries]
    assert reads == [
        ("E1", "employee", "read", f"case/{k1}", "checking my next session"),
        ("eap-admin-7", "admin", "read", f"case/{k1}", "GetCase"),
    ]
    assert listed.entries[1].prev_hash == listed.entries[0].hash
    quota = await auditor.ListAuditEntries(
        apb.ListAuditEntriesRequest(trail="quota"), metadata=as_auditor
    )
    assert list(quota.entries) == []
    verified = await auditor.VerifyAuditTrail(
        apb.VerifyAuditTrailRequest(trail="matcher"), metadata=as_auditor
    )
    assert verified.intact and not verified.problems
    # Only auditors read the trail.
    for metadata in (admin, employee):
        try:
            await auditor.ListAuditEntries(
                apb.ListAuditEntriesRequest(trail="matcher"), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        else:
            raise AssertionError("a non-auditor read the audit trail")


async def test_appends_from_many_callers_keep_one_chain(backend: Backend, suite: Suite) -> None:
    trail = trail_of(suite, "matcher")

    async def read(n: int) -> None:
        set_identity(Identity(f"admin-{n}", Role.ADMIN))
        await trail.record("read", f"case/K{n}")

    await asyncio.gather(*(read(n) for n in range(40)))
    entries = await trail.entries(0, 1000)
    assert [e.seq for e in entries] == list(range(1, 41))
    assert sorted(e.record for e in entries) == sorted(f"case/K{n}" for n in range(40))
    assert await trail.verify() == []


def _verify(
    database_url: str, keys_file: Path | None = None, redis_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`eapctl audit verify`, reading the heads' checkpoints at `redis_url`."""
    env = {**os.environ, "DATABASE_URL": database_url, "EAP_AUTH_MODE": "dev"}
    env.pop("REDIS_URL", None)
    if keys_file is not None:
        env["EAP_AUDIT_KEYS_FILE"] = str(keys_file)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run(
        [EAPCTL, "audit", "verify"], capture_output=True, text=True, env=env, timeout=60
    )


async def test_eapctl_audit_verify_names_an_edited_or_removed_entry(
    backend: Backend, suite: Suite
) -> None:
    for n in (1, 2, 3):
        await submit(suite, case(f"K{n}", f"E{n}"))
        await suite.matcher.GetCase(mpb.GetCaseRequest(case_id=f"K{n}"))
    url = backend.settings.database_url
    intact = await asyncio.to_thread(_verify, url)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "matcher audit trail: 3 entries, the chain holds" in intact.stdout

    trail = trail_of(suite, "matcher")
    engine = trail._engine
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE matcher_audit SET record = 'case/K9' WHERE seq = 2"))
    edited = await asyncio.to_thread(_verify, url)
    assert edited.returncode == 1
    assert "matcher audit entry 2: its content was changed" in edited.stdout

    async with engine.begin() as connection:
        await connection.execute(text("UPDATE matcher_audit SET record = 'case/K2' WHERE seq = 2"))
        await connection.execute(text("DELETE FROM matcher_audit WHERE seq = 3"))
    cut = await asyncio.to_thread(_verify, url)
    assert cut.returncode == 1 and "entries after 2 are missing" in cut.stdout
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM matcher_audit WHERE seq = 1"))
    gone = await asyncio.to_thread(_verify, url)
    assert gone.returncode == 1 and "matcher audit entries 1-1 are missing" in gone.stdout


async def test_a_disclosure_needs_a_legal_reference_or_consent_and_is_audited(
    secured_suite: Secured,
) -> None:
    suite = secured_suite
    k1 = await submit_own(suite, "K1", "E1")
    admin = suite.as_("admin", "eap-admin-7")
    for legal, consent in (("", ""), ("Court order 2027-12", "consent form 55")):
        request = mpb.DiscloseCaseRequest(
            case_id=k1,
            recipient="Pingtung District Court",
            legal_reference=legal,
            consent_reference=consent,
        )
        error = await refused_call(suite.matcher.DiscloseCase(request, metadata=admin))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    disclosed = await suite.matcher.DiscloseCase(
        mpb.DiscloseCaseRequest(
            case_id=k1,
            recipient="Pingtung District Court",
            legal_reference="Court order 2027-12",
        ),
        metadata=(*admin, ("x-eap-purpose", "court order")),
    )
    assert disclosed.case.employee_id == "E1"
    trail = audit_pb2_grpc.AuditServiceStub(suite.channel)
    entries = (
        await trail.ListAuditEntries(
            apb.ListAuditEntriesRequest(trail="matcher"), metadata=suite.as_("auditor", "a-1")
        )
    ).entries
    (disclosure,) = [e for e in entries if e.action == "disclose"]
    assert (disclosure.actor, disclosure.record, disclosure.reference, disclosure.purpose) == (
        "eap-admin-7",
        f"case/{k1} to Pingtung District Court",
        "legal:Court order 2027-12",
        "court order",
    )


def _audit_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


async def test_without_the_audit_key_a_rewritten_chain_is_found_out(
    backend: Backend, tmp_path: Path
) -> None:
    """Someone who can write to the database edits an entry and re-chains
    every entry after it: without the key, their hashes do not verify. Keys
    rotate: entries keep verifying under the key that signed them."""
    old_key, new_key = _audit_key(), _audit_key()
    keys_file = tmp_path / "audit.keys"
    keys_file.write_text(old_key + "\n")
    url = backend.settings.database_url
    settings = replace(backend.settings, audit_keys_file=str(keys_file))

    async def record(numbers: range, keys: str) -> None:
        keys_file.write_text(keys)
        matcher = MatcherService()
        running = await start([QuotaService(), matcher], settings)  # verify reads both trails
        try:
            trail = matcher.audit
            assert isinstance(trail, AuditTrail)
            for n in numbers:
                set_identity(Identity(f"admin-{n}", Role.ADMIN))
                await trail.record("read", f"case/K{n}")
        finally:
            await running.stop(0.5)

    await sign_audit_heads(url, keys_file)  # as `eapctl migrate` under the old key
    await record(range(1, 4), old_key + "\n")
    keys_file.write_text(f"{new_key}\n{old_key}\n")
    # Heads signed by an older key verify while it is in the file.
    rotated = await asyncio.to_thread(_verify, url, keys_file)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    await record(range(4, 5), f"{new_key}\n{old_key}\n")  # rotated: the new key signs
    intact = await asyncio.to_thread(_verify, url, keys_file)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "matcher audit trail: 4 entries, the chain holds" in intact.stdout

    keys_file.write_text(new_key + "\n")  # the old key dropped too soon
    lacking = await asyncio.to_thread(_verify, url, keys_file)
    assert lacking.returncode == 1
    assert "matcher audit entry 1: signed by an audit key this verifier lacks" in lacking.stdout
    assert "quota audit head: signed by an audit key this verifier lacks" in lacking.stdout
    assert "entry 4" not in lacking.stdout and "matcher audit head" not in lacking.stdout
    keys_file.write_text(f"{new_key}\n{old_key}\n")

    # The forger rewrites entry 2 and re-chains 2-4 and the head, with the
    # development key (public) since the real one is out of reach.
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            rows = (
                await connection.execute(text("SELECT * FROM matcher_audit ORDER BY seq"))
            ).all()
            prev = rows[0]._mapping["hash"]
            for row in rows[1:]:
                fields = dict(row._mapping)
                if fields["seq"] == 2:
                    fields["record"] = "case/K9"
                forged = entry_hash(fields, prev, DEV_AUDIT_KEY)
                await connection.execute(
                    text(
                        "UPDATE matcher_audit SET record = :record, prev_hash = :prev, "
                        "hash = :hash WHERE seq = :seq"
                    ),
                    {"record": fields["record"], "prev": prev, "hash": forged, "seq": row.seq},
                )
                prev = forged
            dev = AuditKeys([DEV_AUDIT_KEY])
            forged_head = signed_head("matcher", 4, prev, dev)
            await connection.execute(
                text("UPDATE matcher_audit_head SET last_hash = :hash, signature = :signature"),
                {"hash": prev, "signature": forged_head.signature},
            )
    finally:
        await engine.dispose()
    forged_run = await asyncio.to_thread(_verify, url, keys_file)
    assert forged_run.returncode == 1
    for seq in (2, 3, 4):
        assert f"matcher audit entry {seq}: its content was changed" in forged_run.stdout
    assert "matcher audit head: signed with a signature that does not verify" in forged_run.stdout


def test_audit_keys_must_come_from_a_secret_in_production(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EAP_AUDIT_KEYS_FILE"):
        AuditKeys.load(None, development=False)
    short = tmp_path / "short.keys"
    short.write_text(base64.urlsafe_b64encode(b"too short").decode())
    with pytest.raises(ConfigError, match="32 bytes"):
        AuditKeys.load(str(short), development=False)
    with pytest.raises(ConfigError, match="no readable file"):
        AuditKeys.load(str(tmp_path / "absent"), development=False)
    made = subprocess.run(
        [EAPCTL, "token", "audit-key"], capture_output=True, text=True, timeout=60, check=True
    )
    good = tmp_path / "audit.keys"
    good.write_text(made.stdout)
    assert AuditKeys.load(str(good), development=False).signing_id


# A trail cut short: what someone who can write to the database, but has not
# the audit key, does to hide the last reads.


async def _read(trail: AuditTrail, numbers: range) -> None:
    for n in numbers:
        set_identity(Identity(f"admin-{n}", Role.ADMIN))
        await trail.record("read", f"case/K{n}")


async def _sql(engine: AsyncEngine, statement: str, **values: object) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement), values)


async def _head_row(engine: AsyncEngine) -> dict[str, object]:
    async with engine.connect() as connection:
        row = (await connection.execute(text("SELECT * FROM matcher_audit_head"))).one()
    return dict(row._mapping)


async def _put_back(engine: AsyncEngine, head: dict[str, object]) -> None:
    """Writes `head`, an earlier head row, over the head."""
    await _sql(
        engine,
        "UPDATE matcher_audit_head SET last_seq = :last_seq, last_hash = :last_hash, "
        "key_id = :key_id, signature = :signature",
        **{name: head[name] for name in ("last_seq", "last_hash", "key_id", "signature")},
    )


async def _cut(engine: AsyncEngine, keep: int) -> None:
    """Deletes the entries after `keep` and copies the new last entry's
    number and hash (GENESIS: none left) into the head."""
    async with engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM matcher_audit WHERE seq > :keep"), {"keep": keep}
        )
        last = await connection.scalar(
            text("SELECT hash FROM matcher_audit WHERE seq = :keep"), {"keep": keep}
        )
        await connection.execute(
            text("UPDATE matcher_audit_head SET last_seq = :seq, last_hash = :hash"),
            {"seq": keep, "hash": last or GENESIS},
        )


def _found(problems: list[str], start: str) -> bool:
    return any(problem.startswith(start) for problem in problems)


FORGED_HEAD = "matcher audit head: signed with a signature that does not verify"


async def test_a_trail_cut_short_with_its_head_rewritten_fails_verify(
    backend: Backend, suite: Suite
) -> None:
    trail = trail_of(suite, "matcher")
    url, redis_url = backend.settings.database_url, backend.settings.redis_url
    await _read(trail, range(1, 5))
    intact = await asyncio.to_thread(_verify, url, None, redis_url)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "matcher audit trail: 4 entries, the chain holds" in intact.stdout

    await _cut(trail._engine, keep=2)
    assert _found(await trail.verify(), FORGED_HEAD)
    cut = await asyncio.to_thread(_verify, url, None, redis_url)
    assert cut.returncode == 1 and FORGED_HEAD in cut.stdout, cut.stdout
    # Without the checkpoint outside the database too (as on SQLite).
    no_checkpoint = await asyncio.to_thread(_verify, url)
    assert no_checkpoint.returncode == 1 and FORGED_HEAD in no_checkpoint.stdout

    # The next read signs the head again, but an alarm entry before it keeps
    # what was found: verify names it ever after.
    await _read(trail, range(5, 6))
    entries = await trail.entries(0, 100)
    assert [(e.seq, e.action, e.record) for e in entries[2:]] == [
        (3, "alarm", "audit-head"),
        (4, "read", "case/K5"),
    ]
    assert entries[2].reference == "the head at 2 was signed with a signature that does not verify"
    assert entries[2].actor == "system"
    alarm = "matcher audit entry 3: written because the head at 2 was signed with a signature"
    assert _found(await trail.verify(), alarm)
    later = await asyncio.to_thread(_verify, url)
    assert later.returncode == 1 and alarm in later.stdout
    assert "matcher audit head" not in later.stdout  # signed again: the alarm is the evidence


async def test_an_emptied_trail_with_its_head_reset_fails_verify(
    backend: Backend, suite: Suite
) -> None:
    trail = trail_of(suite, "matcher")
    url, engine = backend.settings.database_url, trail._engine
    await _read(trail, range(1, 4))
    await _cut(engine, keep=0)  # no entry left, the head back at 0 and GENESIS
    assert (await _head_row(engine))["last_seq"] == 0
    assert _found(await trail.verify(), FORGED_HEAD)
    emptied = await asyncio.to_thread(_verify, url)
    assert emptied.returncode == 1 and FORGED_HEAD in emptied.stdout, emptied.stdout

    # The head as the trail's first migration made it, before heads were signed.
    await _sql(engine, "UPDATE matcher_audit_head SET key_id = '', signature = ''")
    unsigned = "matcher audit head: not signed: it was rewritten without the audit key"
    assert _found(await trail.verify(), unsigned)
    blank = await asyncio.to_thread(_verify, url)
    assert blank.returncode == 1 and unsigned in blank.stdout, blank.stdout

    # The quota's trail, empty since its migration signed its head, holds.
    assert "quota audit trail: 0 entries, the chain holds" in blank.stdout


async def test_appends_from_two_replicas_keep_the_head_signed(
    backend: Backend, suite: Suite
) -> None:
    """A second replica: its own engine (and Redis client) on the same
    database, appending at the same time as the first."""
    trail = trail_of(suite, "matcher")
    url, redis_url = backend.settings.database_url, backend.settings.redis_url
    engine = create_engine(url)
    redis = Redis.from_url(redis_url) if redis_url else None
    checkpoint = Checkpoint(redis, "matcher", scope_of(url)) if redis else None
    other = AuditTrail(engine, "matcher", AuditKeys([DEV_AUDIT_KEY]), checkpoint)
    try:
        await asyncio.gather(
            *(_read(trail if n % 2 else other, range(n, n + 1)) for n in range(1, 41))
        )
        entries = await trail.entries(0, 1000)
        assert [e.seq for e in entries] == list(range(1, 41))
        assert {e.action for e in entries} == {"read"}  # no alarm
        assert await trail.verify() == [] and await other.verify() == []
        if checkpoint is not None:  # however the replicas' checkpoints crossed
            checkpointed, forked = await checkpoint.read()
            assert checkpointed is not None and checkpointed.seq == 40 and forked is None
    finally:
        await engine.dispose()
        if redis is not None:
            await redis.aclose()
    verified = await asyncio.to_thread(_verify, url, None, redis_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "matcher audit trail: 40 entries, the chain holds" in verified.stdout


# The checkpoint lives in Redis, which the PostgreSQL backend has; without
# it a replayed head is the residual risk audit.py documents.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_earlier_head_put_back_is_found_by_the_checkpoint(
    backend: Backend, suite: Suite
) -> None:
    """A replayed head: valid, since the key holder signed it once. Only
    the checkpoint outside the database shows it (services/runtime/audit.py)."""
    assert backend.settings.redis_url is not None
    trail = trail_of(suite, "matcher")
    url, redis_url, engine = (
        backend.settings.database_url,
        backend.settings.redis_url,
        trail._engine,
    )
    genesis = await _head_row(engine)
    await _read(trail, range(1, 3))
    earlier = await _head_row(engine)
    await _read(trail, range(3, 5))

    await _sql(engine, "DELETE FROM matcher_audit WHERE seq > 2")
    await _put_back(engine, earlier)
    behind = (
        "matcher audit trail: entries after 2 are missing: the checkpoint outside the "
        "database records 4"
    )
    assert _found(await trail.verify(), behind)
    replayed = await asyncio.to_thread(_verify, url, None, redis_url)
    assert replayed.returncode == 1 and behind in replayed.stdout, replayed.stdout
    # What the signed head alone cannot tell.
    assert (await asyncio.to_thread(_verify, url)).returncode == 0

    # The trail grows again: past the checkpoint's number, its entries are
    # not the ones it recorded; the first one after it does not follow it.
    await _read(trail, range(5, 7))
    rewritten = "matcher audit entry 4: not the entry the checkpoint outside the database recorded"
    assert _found(await trail.verify(), rewritten)
    await _read(trail, range(7, 9))
    grown = await asyncio.to_thread(_verify, url, None, redis_url)
    assert grown.returncode == 1
    assert "matcher audit entry 5: when it was written it did not follow the entry" in grown.stdout

    # Emptied, with the head its migration signed put back.
    await _sql(engine, "DELETE FROM matcher_audit")
    await _put_back(engine, genesis)
    emptied = await asyncio.to_thread(_verify, url, None, redis_url)
    assert emptied.returncode == 1
    assert "entries after 0 are missing: the checkpoint outside the database" in emptied.stdout


async def test_the_migration_signs_the_heads_of_new_and_existing_trails(tmp_path: Path) -> None:
    key = tmp_path / "audit.keys"
    key.write_text(_audit_key() + "\n")
    keys = AuditKeys.load(str(key), development=False)
    attributes = migration_attributes(str(key), development=False)
    engine = create_engine(f"sqlite:///{tmp_path}/eap.db")

    def move_to(connection: Connection, revision: str, down: bool = False) -> None:
        config = alembic_config(MatcherService.migrations, MatcherService.version_table)
        config.attributes.update(attributes, connection=connection)
        (command.downgrade if down else command.upgrade)(config, revision)

    try:
        # A trail of two entries, as the version before signed heads wrote it.
        async with engine.begin() as connection:
            await connection.run_sync(move_to, "0010")
            entries, head = tables("matcher", signed=False)
            prev = GENESIS
            for seq in (1, 2):
                fields: dict[str, object] = {
                    "seq": seq,
                    "recorded_at": f"2027-03-08T00:00:0{seq}.000000+00:00",
                    "actor": "admin-1",
                    "role": "admin",
                    "action": "read",
                    "record": f"case/K{seq}",
                    "purpose": "GetCase",
                    "reference": "",
                    "key_id": keys.signing_id,
                }
                digest = entry_hash(fields, prev, keys.signing_key)
                await connection.execute(
                    insert(entries).values(**fields, prev_hash=prev, hash=digest)
                )
                prev = digest
            await connection.execute(update(head).values(last_seq=2, last_hash=prev))
        await migrate(engine, MatcherService.migrations, MatcherService.version_table, attributes)
        trail = AuditTrail(engine, "matcher", keys)
        assert await trail.verify() == []
        await _read(trail, range(3, 4))
        assert [e.action for e in await trail.entries(0, 10)] == ["read"] * 3  # no alarm
        assert await trail.verify() == []
        # Down and up again: the head as it stands is signed again.
        async with engine.begin() as connection:
            await connection.run_sync(move_to, "0010", True)
            await connection.run_sync(move_to, "head")
        assert await trail.verify() == []
    finally:
        await engine.dispose()

    # A new trail: its empty head signed with the key the migration was given.
    fresh = create_engine(f"sqlite:///{tmp_path}/fresh.db")
    try:
        await migrate(fresh, QuotaService.migrations, QuotaService.version_table, attributes)
        assert await AuditTrail(fresh, "quota", keys).verify() == []
        assert await AuditTrail(fresh, "quota", AuditKeys([DEV_AUDIT_KEY])).verify() == [
            "quota audit head: signed by an audit key this verifier lacks"
        ]
    finally:
        await fresh.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # the checkpoint is in Redis
async def test_the_checkpoint_only_moves_forward(backend: Backend) -> None:
    """Replicas' checkpoints arrive in any order; only an entry right after
    the checkpoint that does not follow it is evidence."""
    assert backend.settings.redis_url is not None
    redis = Redis.from_url(backend.settings.redis_url)
    keys = AuditKeys([DEV_AUDIT_KEY])
    checkpoint = Checkpoint(redis, "matcher", scope_of(backend.settings.database_url))
    hashes = [GENESIS] + [f"{n:064x}" for n in range(1, 8)]

    async def advance(seq: int, prev: str) -> tuple[int | None, int | None]:
        await checkpoint.advance(signed_head("matcher", seq, hashes[seq], keys).signed, prev)
        newest, forked = await checkpoint.read()
        return (newest.seq if newest is not None else None), forked

    try:
        assert await advance(1, hashes[0]) == (1, None)
        assert await advance(3, hashes[2]) == (3, None)  # 2 not yet arrived
        assert await advance(2, hashes[1]) == (3, None)  # late: never set back
        assert await advance(4, hashes[3]) == (4, None)
        assert await advance(5, "a hash that is not entry 4's") == (5, 5)
        newest, _ = await checkpoint.read()
        assert newest == signed_head("matcher", 5, hashes[5], keys).signed
    finally:
        await redis.aclose()
