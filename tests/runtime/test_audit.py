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
from sqlalchemy import text

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime.audit import DEV_AUDIT_KEY, AuditKeys, AuditTrail, entry_hash
from services.runtime.auth import Identity, Role, set_identity
from services.runtime.database import create_engine
from services.runtime.errors import ConfigError
from services.runtime.server import start
from tests.access import Secured
from tests.conftest import Backend, Suite
from tests.county import account
from tests.matcher.test_booking import case, submit
from tests.quota.test_rpcs import refused as refused_call

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
    await suite.matcher.SubmitCase(mpb.SubmitCaseRequest(case=case("K1", "E1")), metadata=employee)
    await suite.matcher.GetCase(
        mpb.GetCaseRequest(case_id="K1"),
        metadata=(*employee, ("x-eap-purpose", "checking my next session")),
    )
    admin = suite.as_("admin", "eap-admin-7")
    await suite.matcher.GetCase(mpb.GetCaseRequest(case_id="K1"), metadata=admin)
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
        ("E1", "employee", "read", "case/K1", "checking my next session"),
        ("eap-admin-7", "admin", "read", "case/K1", "GetCase"),
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


def _verify(database_url: str, keys_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "EAP_AUTH_MODE": "dev"}
    if keys_file is not None:
        env["EAP_AUDIT_KEYS_FILE"] = str(keys_file)
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
    employee = suite.as_("employee", "E1")
    await suite.matcher.SubmitCase(mpb.SubmitCaseRequest(case=case("K1", "E1")), metadata=employee)
    admin = suite.as_("admin", "eap-admin-7")
    for legal, consent in (("", ""), ("Court order 2027-12", "consent form 55")):
        request = mpb.DiscloseCaseRequest(
            case_id="K1",
            recipient="Pingtung District Court",
            legal_reference=legal,
            consent_reference=consent,
        )
        error = await refused_call(suite.matcher.DiscloseCase(request, metadata=admin))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    disclosed = await suite.matcher.DiscloseCase(
        mpb.DiscloseCaseRequest(
            case_id="K1",
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
        "case/K1 to Pingtung District Court",
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

    await record(range(1, 4), old_key + "\n")
    await record(range(4, 5), f"{new_key}\n{old_key}\n")  # rotated: the new key signs
    intact = await asyncio.to_thread(_verify, url, keys_file)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "matcher audit trail: 4 entries, the chain holds" in intact.stdout

    keys_file.write_text(new_key + "\n")  # the old key dropped too soon
    lacking = await asyncio.to_thread(_verify, url, keys_file)
    assert lacking.returncode == 1
    assert "matcher audit entry 1: signed by an audit key this verifier lacks" in lacking.stdout
    assert "entry 4" not in lacking.stdout
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
            await connection.execute(
                text("UPDATE matcher_audit_head SET last_hash = :hash"), {"hash": prev}
            )
    finally:
        await engine.dispose()
    forged_run = await asyncio.to_thread(_verify, url, keys_file)
    assert forged_run.returncode == 1
    for seq in (2, 3, 4):
        assert f"matcher audit entry {seq}: its content was changed" in forged_run.stdout


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
