"""Two counties in one deployment (issue 14, acceptance 2): every RPC, as
every role of one tenant, aimed at the other tenant's records, is refused or
answers nothing of them, and leaves them as they were.

Miaoli's records carry ids a Pingtung caller could guess (its employee's and
counselor's ids are the very subjects of Pingtung's tokens) and, in every
name, a word that only Miaoli's data holds: an answer carrying that word, or
one of Miaoli's server-made ids, has crossed the wall.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime import policy
from services.runtime.auth import Role
from services.runtime.config import Settings
from services.runtime.server import RunningServer, start
from services.runtime.tenancy import TENANT_HEADER
from tests import stores
from tests.access import Keys, Metadata, bearer, make_keys, secured
from tests.conftest import MONDAY, at
from tests.county import counselor
from tests.matcher.test_booking import case
from tests.quota.test_rpcs import refused
from tests.runtime.test_access import METHODS

A, B = "pingtung", "miaoli"
MARK = "苗栗"  # in every name Miaoli's records hold, and nowhere else
YEAR = 2027
EXAMPLE = Path(__file__).parents[2] / "services/calendar/examples/pingtung-2027.toml"


@dataclass
class Miaoli:
    """Miaoli's records, as its own administrator made them."""

    case_id: str = "ML-K1"
    employee_id: str = "ML-E1"
    counselor_id: str = "ML-C001"
    agency_id: str = "ML-HR"
    provider_id: str = "ML-P1"
    booking_id: str = ""
    held_id: str = ""
    job_id: str = ""
    plan_id: str = ""
    made_ids: list[str] = field(default_factory=list)  # the server's: nobody can guess them


@dataclass
class Deployment:
    made: Keys
    server: RunningServer
    channel: grpc.aio.Channel
    miaoli: Miaoli

    def as_(self, role: str, subject: str, tenant: str) -> Metadata:
        return bearer(self.made.token(role, subject, tenant=tenant))


def _settings(root: Path, made: Keys) -> Settings:
    return secured(
        Settings(
            grpc_address="127.0.0.1:0",
            metrics_port=-1,
            tenants=(A, B),
            database_url=f"sqlite:///{root}/eap-{{tenant}}.db",
        ),
        made,
    )


async def _seed_miaoli(channel: grpc.aio.Channel, admin: Metadata) -> Miaoli:
    b = Miaoli()
    quota = quota_pb2_grpc.QuotaServiceStub(channel)
    matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
    calendar = calendar_pb2_grpc.CalendarServiceStub(channel)
    await quota.UpsertAgency(
        qpb.UpsertAgencyRequest(
            agency_id=b.agency_id, organisation=B, display_name=f"{MARK}人事處"
        ),
        metadata=admin,
    )
    await quota.TopUpBudget(
        qpb.TopUpBudgetRequest(
            idempotency_key="ml-budget",
            agency_id=b.agency_id,
            fiscal_year=YEAR,
            amount_ntd=100_000,
            reason=f"{MARK} annual budget",
        ),
        metadata=admin,
    )
    await quota.SetEntitlementPolicy(
        qpb.SetEntitlementPolicyRequest(
            organisation=B, staff_category="official", fiscal_year=YEAR, minutes=360
        ),
        metadata=admin,
    )
    await quota.SetProviderContract(
        qpb.SetProviderContractRequest(
            provider_id=b.provider_id,
            fiscal_year=YEAR,
            hourly_rate_ntd=2000,
            cap_minutes=6000,
            reason="contract",
        ),
        metadata=admin,
    )
    await matcher.ImportPeople(
        mpb.ImportPeopleRequest(
            people=[
                mpb.Person(
                    employee_id=b.employee_id, agency_id=b.agency_id, staff_category="official"
                )
            ]
        ),
        metadata=admin,
    )
    await matcher.UpsertCounselor(
        mpb.UpsertCounselorRequest(
            counselor=counselor(
                b.counselor_id,
                provider=b.provider_id,
                display_name=f"{MARK}諮商師",
                location=f"{MARK}縣政府",
            )
        ),
        metadata=admin,
    )
    await matcher.SetContact(
        mpb.SetContactRequest(
            employee_id=b.employee_id,
            contact=mpb.Contact(
                name=f"{MARK}員工", phone="0912-345-678", email="e1@miaoli.example"
            ),
        ),
        metadata=admin,
    )
    await matcher.SubmitCase(
        mpb.SubmitCaseRequest(
            case=case(b.case_id, b.employee_id, agency_id="", staff_category="", sessions_wanted=3)
        ),
        metadata=admin,
    )
    window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=14), 0)}
    slots = (
        await matcher.FindSlots(mpb.FindSlotsRequest(case_id=b.case_id, **window), metadata=admin)
    ).slots
    held = await matcher.HoldSlot(
        mpb.HoldSlotRequest(
            case_id=b.case_id, counselor_id=slots[0].counselor_id, start=slots[0].start
        ),
        metadata=admin,
    )
    booked = await matcher.ConfirmBooking(
        mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id), metadata=admin
    )
    b.booking_id = booked.booking.booking_id
    later = next(
        s for s in slots if s.start.seconds >= at(MONDAY + dt.timedelta(weeks=1), 0).seconds
    )
    b.held_id = (
        await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=b.case_id, counselor_id=later.counselor_id, start=later.start
            ),
            metadata=admin,
        )
    ).booking.booking_id
    b.job_id = (
        await matcher.SubmitMatchJob(
            mpb.SubmitMatchJobRequest(
                horizon_start=at(MONDAY + dt.timedelta(weeks=2), 0), weeks=1, time_limit_seconds=1
            ),
            metadata=admin,
        )
    ).job.job_id
    b.plan_id = (
        await calendar.PlanProgram(
            cpb.PlanProgramRequest(
                program_toml=EXAMPLE.read_text().replace("Pingtung", f"{MARK} Miaoli"),
                time_limit_seconds=2,
            ),
            metadata=admin,
        )
    ).plan_id
    charges = await quota.ListCharges(qpb.ListChargesRequest(), metadata=admin)
    b.made_ids = [b.booking_id, b.held_id, b.job_id, b.plan_id] + [c.hold_id for c in charges.holds]
    return b


@pytest.fixture
async def deployment(tmp_path: Path, march_2027: None) -> AsyncIterator[Deployment]:
    made = make_keys(tmp_path / "keys")
    for tenant in (A, B):
        url = stores.migrated_sqlite(tmp_path / f"eap-{tenant}.db")
        await stores.sign_audit_heads(url, made.audit)
    server = await start(
        [QuotaService(), MatcherService(), CalendarService()], _settings(tmp_path, made)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = bearer(made.token("admin", "ml-admin", tenant=B))
        miaoli = await _seed_miaoli(channel, admin)
        yield Deployment(made, server, channel, miaoli)
    await server.stop(0)


# -- requests aimed at Miaoli's records ------------------------------------------------


def _strings(b: Miaoli) -> dict[str, str]:
    return {
        "case_id": b.case_id,
        "booking_id": b.booking_id,
        "new_booking_id": b.held_id,
        "replaces_booking_id": b.booking_id,
        "employee_id": b.employee_id,
        "person_id": b.employee_id,
        "counselor_id": b.counselor_id,
        "agency_id": b.agency_id,
        "from_agency_id": b.agency_id,
        "to_agency_id": b.agency_id,
        "provider_id": b.provider_id,
        "job_id": b.job_id,
        "plan_id": b.plan_id,
        "hold_id": b.made_ids[-1] if len(b.made_ids) > 4 else "",
        "organisation": B,
        "staff_category": "official",
        "trail": "matcher",
        "id": b.agency_id,
    }


def _aimed(message: Message, b: Miaoli, depth: int = 0) -> Message:
    """`message` with every field that names a record naming Miaoli's."""
    strings = _strings(b)
    for f in message.DESCRIPTOR.fields:
        repeated = f.is_repeated
        if f.type == FieldDescriptor.TYPE_STRING:
            if f.name == "case_ids":
                getattr(message, f.name).append(b.case_id)
            elif f.name in strings and not repeated:
                setattr(message, f.name, strings[f.name])
            elif f.name in ("idempotency_key", "request_id", "group_id"):
                setattr(message, f.name, f"walk-{f.name}")
        elif f.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64) and not repeated:
            value = {"fiscal_year": YEAR, "year": YEAR, "minutes": 60, "weeks": 1}.get(f.name)
            if value is not None:
                setattr(message, f.name, value)
        elif f.type == FieldDescriptor.TYPE_ENUM and not repeated:
            setattr(message, f.name, 1)
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not repeated and depth < 2:
            if f.message_type.full_name == "google.protobuf.Timestamp":
                days = 14 if f.name.endswith("end") else 0
                getattr(message, f.name).CopyFrom(at(MONDAY + dt.timedelta(days=days), 9))
            else:
                _aimed(getattr(message, f.name), b, depth + 1)
    return message


@dataclass(frozen=True)
class Caller:
    role: Role
    subject: str

    def metadata(self, made: Keys) -> Metadata:
        if self.role is Role.SERVICE:
            token = made.token("service", self.subject, kid=f"service-{self.subject}")
            return (*bearer(token), (TENANT_HEADER, A))  # a service calling for Pingtung
        return bearer(made.token(self.role.value, self.subject, tenant=A))


# Pingtung's callers; its employee and counselor bear the ids of Miaoli's.
CALLERS = [
    Caller(Role.EMPLOYEE, "ML-E1"),
    Caller(Role.COUNSELOR, "ML-C001"),
    Caller(Role.SUPERVISOR, "S1"),
    Caller(Role.ADMIN, "pt-admin"),
    Caller(Role.HR, "pt-hr"),
    Caller(Role.AUDITOR, "pt-audit"),
    Caller(Role.OPERATOR, "pt-ops"),
    Caller(Role.SERVICE, "matcher"),
    Caller(Role.SERVICE, "calendar"),
]


def _allowed(caller: Caller, method: str) -> bool:
    access = policy.POLICY[method]
    if caller.role is Role.SERVICE:
        return caller.subject in access.services
    return caller.role in access.scopes


async def _answer(
    channel: grpc.aio.Channel, method: str, request: bytes, metadata: Metadata
) -> tuple[grpc.StatusCode, bytes]:
    path = f"/{method}"
    try:
        if METHODS[method].server_streaming:
            answers = [
                bytes(a)
                async for a in channel.unary_stream(path)(request, metadata=metadata, timeout=10)
            ]
            return grpc.StatusCode.OK, b"".join(answers)
        answer = await channel.unary_unary(path)(request, metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, bytes(answer)
    except grpc.aio.AioRpcError as error:
        return error.code(), (error.details() or "").encode()


async def _miaolis_state(d: Deployment) -> list[bytes]:
    """What Miaoli's administrator and auditor read of its records."""
    admin = d.as_("admin", "ml-admin", B)
    auditor = d.as_("auditor", "ml-audit", B)
    matcher = matcher_pb2_grpc.MatcherServiceStub(d.channel)
    quota = quota_pb2_grpc.QuotaServiceStub(d.channel)
    agency = qpb.AccountRef(kind=qpb.ACCOUNT_KIND_AGENCY, id=d.miaoli.agency_id, fiscal_year=YEAR)
    reads = [
        await matcher.GetCase(mpb.GetCaseRequest(case_id=d.miaoli.case_id), metadata=admin),
        await matcher.ListCounselors(mpb.ListCounselorsRequest(), metadata=admin),
        await matcher.GetContact(
            mpb.GetContactRequest(employee_id=d.miaoli.employee_id), metadata=admin
        ),
        await quota.GetBalance(qpb.GetBalanceRequest(account=agency), metadata=admin),
        await quota.ListLedger(qpb.ListLedgerRequest(account=agency), metadata=admin),
        await quota.ListCharges(qpb.ListChargesRequest(), metadata=admin),
    ]
    trails = audit_pb2_grpc.AuditServiceStub(d.channel)
    for trail in ("matcher", "quota"):
        verified = await trails.VerifyAuditTrail(
            apb.VerifyAuditTrailRequest(trail=trail), metadata=auditor
        )
        assert verified.intact, verified.problems
    return [r.SerializeToString(deterministic=True) for r in reads]


async def test_no_rpc_of_one_tenant_reaches_anothers_records(deployment: Deployment) -> None:
    d = deployment
    before = await _miaolis_state(d)
    crossed, walked = [], 0
    for method in METHODS:
        request = _aimed(
            message_factory.GetMessageClass(METHODS[method].input_type)(), d.miaoli
        ).SerializeToString()
        for caller in CALLERS:
            if not _allowed(caller, method):
                continue
            walked += 1
            code, answer = await _answer(d.channel, method, request, caller.metadata(d.made))
            # A refusal may repeat the id the caller sent; an answer may
            # carry none of Miaoli's, and nothing may carry its names.
            marks = (MARK, *(d.miaoli.made_ids if code is grpc.StatusCode.OK else ()))
            leaked = [found for found in marks if found and found.encode() in answer]
            if leaked:
                crossed.append(f"{method} as {caller.role}: {code.name} carrying {leaked}")
    assert crossed == []
    assert walked > 100  # every row of the table, every role in it
    assert await _miaolis_state(d) == before  # and nothing of Miaoli's changed


async def test_a_caller_cannot_choose_its_tenant(deployment: Deployment) -> None:
    d = deployment
    matcher = matcher_pb2_grpc.MatcherServiceStub(d.channel)
    request = mpb.GetCaseRequest(case_id=d.miaoli.case_id)
    # A Pingtung administrator naming Miaoli in the header meant for services.
    as_pingtung = (*d.as_("admin", "pt-admin", A), (TENANT_HEADER, B))
    error = await refused(matcher.GetCase(request, metadata=as_pingtung))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # A token naming a tenant not served here, or none where two are.
    for claims in ({"tenant": "nowhere"}, {"tenant": ["miaoli"]}):
        token = bearer(d.made.token("admin", "x", **claims))
        error = await refused(matcher.GetCase(request, metadata=token))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(matcher.GetCase(request, metadata=bearer(d.made.token("admin", "x"))))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # Miaoli's own administrator reads it.
    mine = await matcher.GetCase(request, metadata=d.as_("admin", "ml-admin", B))
    assert mine.case.agency_id == d.miaoli.agency_id


async def test_each_tenant_keeps_its_own_database_and_loops(deployment: Deployment) -> None:
    """Each tenant's instances run their loops on their own database: a
    hold Miaoli lets lapse is given back by Miaoli's sweeper."""
    d = deployment
    assert set(d.server.tenants) == {A, B}
    engines = {t: [s.engine.url.database for s in ss] for t, ss in d.server.tenants.items()}
    assert all(db.endswith(f"eap-{t}.db") for t, dbs in engines.items() for db in dbs)
    # Health says each tenant's apart (readiness: while some tenant's answer).
    health = health_pb2_grpc.HealthStub(d.channel)
    for name in (
        "eap.quota.v1.QuotaService",
        f"eap.quota.v1.QuotaService/{A}",
        f"eap.matcher.v1.MatcherService/{B}",
    ):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
    quota = quota_pb2_grpc.QuotaServiceStub(d.channel)
    admin = d.as_("admin", "ml-admin", B)
    agency = qpb.GetBalanceRequest(
        account=qpb.AccountRef(
            kind=qpb.ACCOUNT_KIND_AGENCY, id=d.miaoli.agency_id, fiscal_year=YEAR
        )
    )
    baseline = (await quota.GetBalance(agency, metadata=admin)).balance.held
    await quota.Reserve(
        qpb.ReserveRequest(
            idempotency_key="lapsing",
            employee_id=d.miaoli.employee_id,
            agency_id=d.miaoli.agency_id,
            staff_category="official",
            provider_id=d.miaoli.provider_id,
            session_start=at(MONDAY + dt.timedelta(weeks=3), 10),
            minutes=60,
            hold_ttl_seconds=1,
        ),
        metadata=admin,
    )
    assert (await quota.GetBalance(agency, metadata=admin)).balance.held > baseline
    for _ in range(100):
        if (await quota.GetBalance(agency, metadata=admin)).balance.held == baseline:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("Miaoli's sweeper did not give the lapsed hold back")
