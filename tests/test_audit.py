"""The audit trail: every read of a person's records is written down (who,
when, which record, for what), the chain of hashes shows any entry changed
or removed, and `eapctl audit verify` names it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
from sqlalchemy import text

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.runtime.audit import AuditTrail
from services.runtime.auth import Identity, Role, set_identity
from tests.access import Secured
from tests.conftest import Backend, Suite
from tests.county import account
from tests.test_matcher_booking import case, submit
from tests.test_quota_rpcs import refused as refused_call

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


def _verify(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "EAP_AUTH_MODE": "dev"}
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
