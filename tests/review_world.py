"""A small county's quarter for the programme's review (issue 16, item 4),
made over gRPC as the booking frontend and the counselors make it: cases
submitted on known days, sessions booked in the week of MONDAY, then
attended, missed or cancelled late.

    psychological  video      6 people, attended
    psychological  in person  5 attended, 1 no-show
    family         video      2 attended              (a small cell)
    family         in person  5 attended, 1 late cancellation

The psychological cases were submitted a week before their sessions'
Monday, the family ones three days before.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.matcher.survey.rows import AnswerRow
from services.quota.service import QuotaService
from services.runtime import clock
from services.runtime.config import Settings
from services.runtime.database import create_engine
from services.runtime.server import RunningServer, start
from tests import stores
from tests.access import AsAdmin, Keys, bearer, make_keys, secured
from tests.conftest import MONDAY, TAIPEI, during
from tests.county import counselor, enrol, seed

PERIOD = "2027-Q1"
WEEK = "2027-W10"  # MONDAY's
ATTENDED, NO_SHOW, LATE = "attended", "no_show", "late"


@dataclass(frozen=True)
class Planned:
    employee_id: str
    category: int
    modality: int
    outcome: str
    submitted: dt.datetime


PSYCH, FAMILY = pb.CATEGORY_PSYCHOLOGICAL, pb.CATEGORY_FAMILY
VIDEO, IN_PERSON = pb.MODALITY_VIDEO, pb.MODALITY_IN_PERSON
WEEK_BEFORE = dt.datetime.combine(MONDAY - dt.timedelta(days=7), dt.time(8), TAIPEI)
DAYS_BEFORE = dt.datetime.combine(MONDAY - dt.timedelta(days=3), dt.time(8), TAIPEI)


def planned() -> list[Planned]:
    plan: list[Planned] = []

    def add(n: int, category: int, modality: int, outcome: str, when: dt.datetime) -> None:
        for _ in range(n):
            plan.append(Planned(f"E{100 + len(plan)}", category, modality, outcome, when))

    add(6, PSYCH, VIDEO, ATTENDED, WEEK_BEFORE)
    add(5, PSYCH, IN_PERSON, ATTENDED, WEEK_BEFORE)
    add(1, PSYCH, IN_PERSON, NO_SHOW, WEEK_BEFORE)
    add(2, FAMILY, VIDEO, ATTENDED, DAYS_BEFORE)
    add(5, FAMILY, IN_PERSON, ATTENDED, DAYS_BEFORE)
    add(1, FAMILY, IN_PERSON, LATE, DAYS_BEFORE)
    return plan


def _open_counselor(counselor_id: str, provider: str) -> pb.Counselor:
    """Free every weekday, 09:00-17:00, eight sessions a day, both ways."""
    return counselor(
        counselor_id,
        provider=provider,
        specialties=[PSYCH, FAMILY],
        modalities=[IN_PERSON, VIDEO],
        max_sessions_per_day=8,
        weekly_availability=[
            pb.WeeklyWindow(weekday=d, start_time="09:00", end_time="17:00") for d in range(1, 6)
        ],
    )


def _case(item: Planned, case_id: str) -> pb.Case:
    day = dt.datetime.combine(MONDAY, dt.time(9), TAIPEI)
    window = pb.TimeRange()
    window.start.FromDatetime(day)
    window.end.FromDatetime(day + dt.timedelta(days=4, hours=8))
    return pb.Case(
        case_id=case_id,
        employee_id=item.employee_id,
        agency_id="PT-HR",
        staff_category="official",
        category=item.category,  # type: ignore[arg-type]
        kind=pb.CASE_KIND_GENERAL,
        sessions_wanted=1,
        minutes=60,
        modalities=[item.modality],  # type: ignore[list-item]
        availability=[window],
        time_off=pb.TIME_OFF_OFFICIAL_LEAVE,
    )


async def build(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub) -> list[Planned]:
    """The quarter's bookings and their outcomes, made by an administrator
    (the stub's channel carries the token, if the suite wants one); the
    clock is MONDAY 08:00 before and after."""
    for counselor_id, provider in (("C101", "P1"), ("C102", "P2")):
        await matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(counselor=_open_counselor(counselor_id, provider))
        )
    plan = planned()
    for n, item in enumerate(plan):
        case_id = f"RV-{n:02d}"
        with clock.moved_to(item.submitted):
            await matcher.SubmitCase(pb.SubmitCaseRequest(case=_case(item, case_id)))
        found = await matcher.FindSlots(pb.FindSlotsRequest(case_id=case_id, max_slots=1))
        slot = found.slots[0]
        held = await matcher.HoldSlot(
            pb.HoldSlotRequest(case_id=case_id, counselor_id=slot.counselor_id, start=slot.start)
        )
        booking = (
            await matcher.ConfirmBooking(
                pb.ConfirmBookingRequest(booking_id=held.booking.booking_id)
            )
        ).booking
        if item.outcome == LATE:
            with during(booking.start, minutes=-120):  # two hours before: inside the notice
                await matcher.CancelBooking(
                    pb.CancelBookingRequest(
                        booking_id=booking.booking_id, cancelled_by=pb.CANCELLED_BY_EMPLOYEE
                    )
                )
            continue
        outcome = pb.ATTENDANCE_NO_SHOW if item.outcome == NO_SHOW else pb.ATTENDANCE_ATTENDED
        with during(booking.start, minutes=70):
            await matcher.CompleteSession(
                pb.CompleteSessionRequest(booking_id=booking.booking_id, outcome=outcome)
            )
    return plan


async def answered(
    url: str, provider: str, category: str, scores: list[int], question: str = "helpfulness"
) -> None:
    """Survey answers as the survey's form stores them (week, provider,
    category, score: nothing else)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                AnswerRow.__table__.insert(),  # type: ignore[attr-defined]
                [
                    {
                        "answer_id": uuid.uuid4().hex,
                        "iso_week": WEEK,
                        "provider_id": provider,
                        "category": category,
                        "question_id": question,
                        "score": score,
                        "text": None,
                    }
                    for score in scores
                ],
            )
    finally:
        await engine.dispose()


# Two counties served side by side, every call signed (tests.access): the
# review's world built in the first, the second left empty.
A, B = "pingtung", "miaoli"


@dataclass
class Counties:
    made: Keys
    server: RunningServer
    setup: grpc.aio.Channel  # the first county's administrator's

    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / f'eap-{A}.db'}"


@asynccontextmanager
async def two_counties(tmp_path: Path) -> AsyncIterator[Counties]:
    made = make_keys(tmp_path / "keys")
    for tenant in (A, B):
        url = stores.migrated_sqlite(tmp_path / f"eap-{tenant}.db")
        await stores.sign_audit_heads(url, made.audit)
    settings = Settings(
        grpc_address="127.0.0.1:0",
        metrics_port=-1,
        tenants=(A, B),
        database_url=f"sqlite:///{tmp_path}/eap-{{tenant}}.db",
    )
    server = await start(
        [QuotaService(), MatcherService(), CalendarService()], secured(settings, made)
    )
    admin = bearer(made.token("admin", "pt-admin", tenant=A))
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}",
            interceptors=[AsAdmin(admin)],  # type: ignore[list-item]
        ) as setup:
            await seed(quota_pb2_grpc.QuotaServiceStub(setup))
            matcher = matcher_pb2_grpc.MatcherServiceStub(setup)
            await enrol(matcher)
            await build(matcher)
            yield Counties(made, server, setup)
    finally:
        await server.stop(0)
