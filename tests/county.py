"""A small county for tests: one organisation, two agencies, two providers."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.matcher.booking.records import case_id_for
from services.runtime.auth import Identity, Role

M = TypeVar("M", bound=Message)

YEAR = 2027
RATE = 2000  # NT$ per hour
ORG = "pingtung"
# The people directory's staff: every test employee E0-E200 works for
# PT-HR as an official, unless a test enrols them otherwise.
STAFF = tuple(f"E{n}" for n in range(201))


def at(day: dt.date, hour: int = 10) -> Timestamp:
    """A session start on `day` at `hour` o'clock, Asia/Taipei."""
    moment = dt.datetime(
        day.year, day.month, day.day, hour, tzinfo=dt.timezone(dt.timedelta(hours=8))
    )
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def week(n: int) -> dt.date:
    """The Tuesday of ISO week n of YEAR."""
    return dt.date.fromisocalendar(YEAR, n, 2)


async def seed(
    stub: quota_pb2_grpc.QuotaServiceStub,
    budget: int = 100_000,
    cap_minutes: int = 6_000,
    entitlement_minutes: int = 360,
    year: int = YEAR,
) -> None:
    for agency in ("PT-HR", "PT-EDU"):
        await stub.UpsertAgency(
            pb.UpsertAgencyRequest(agency_id=agency, organisation=ORG, display_name=agency)
        )
        await stub.TopUpBudget(
            pb.TopUpBudgetRequest(
                idempotency_key=f"budget-{agency}-{year}",
                agency_id=agency,
                fiscal_year=year,
                amount_ntd=budget,
                reason="annual budget",
            )
        )
    for category in ("official", "teacher"):
        await stub.SetEntitlementPolicy(
            pb.SetEntitlementPolicyRequest(
                organisation=ORG,
                staff_category=category,
                fiscal_year=year,
                minutes=entitlement_minutes,
            )
        )
    for provider in ("P1", "P2"):
        await stub.SetProviderContract(
            pb.SetProviderContractRequest(
                provider_id=provider,
                fiscal_year=year,
                hourly_rate_ntd=RATE,
                cap_minutes=cap_minutes,
                reason="contract",
            )
        )


def reserve_request(
    key: str,
    employee: str = "E1",
    n_week: int = 10,
    minutes: int = 60,
    agency: str = "PT-HR",
    provider: str = "P1",
    category: str = "official",
    ttl: int = 0,
) -> pb.ReserveRequest:
    return pb.ReserveRequest(
        idempotency_key=key,
        employee_id=employee,
        agency_id=agency,
        staff_category=category,
        provider_id=provider,
        session_start=at(week(n_week)),
        minutes=minutes,
        hold_ttl_seconds=ttl,
    )


def account(kind: int, owner: str) -> pb.AccountRef:
    return pb.AccountRef(kind=kind, id=owner, fiscal_year=YEAR)


def counselor(counselor_id: str = "C001", provider: str = "P1", **changes: object) -> mpb.Counselor:
    message = mpb.Counselor(
        counselor_id=counselor_id,
        provider_id=provider,
        display_name="Counselor Lin",
        specialties=[mpb.CATEGORY_PSYCHOLOGICAL, mpb.CATEGORY_FAMILY],
        modalities=[mpb.MODALITY_IN_PERSON, mpb.MODALITY_VIDEO],
        location="Pingtung office 3F",
        max_sessions_per_day=4,
        weekly_availability=[
            mpb.WeeklyWindow(weekday=1, start_time="09:00", end_time="12:00"),
            mpb.WeeklyWindow(weekday=1, start_time="13:30", end_time="17:00"),
            mpb.WeeklyWindow(weekday=3, start_time="18:00", end_time="21:00"),
        ],
    )
    return changed(message, changes)


def changed(message: M, changes: dict[str, object]) -> M:
    """`message` with some fields set to other values (lists replace lists)."""
    for field, value in changes.items():
        if isinstance(value, list):
            message.ClearField(field)
            getattr(message, field).extend(value)
        else:
            setattr(message, field, value)
    return message


async def enrol(
    matcher: matcher_pb2_grpc.MatcherServiceStub,
    employees: tuple[str, ...] | list[str] = STAFF,
    agency: str = "PT-HR",
    category: str = "official",
    metadata: tuple[tuple[str, str], ...] = (),
) -> None:
    """Puts `employees` in the people directory (who pays for their cases)."""
    await matcher.ImportPeople(
        mpb.ImportPeopleRequest(
            people=[
                mpb.Person(employee_id=e, agency_id=agency, staff_category=category)
                for e in employees
            ]
        ),
        metadata=metadata,
    )


def case_id(request_id: str, subject: str = "dev", role: Role = Role.ADMIN) -> str:
    """The id the matcher gives the case `subject` submits as `request_id`
    (by default a development call's: an administrator, `dev`)."""
    return case_id_for(Identity(subject, role), request_id)
