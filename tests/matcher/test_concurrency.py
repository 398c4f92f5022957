"""Two `eapctl serve all` replicas on one PostgreSQL database and one Redis:
a hundred people trying to book the same slot at once get exactly one
booking between them, and nothing else is left behind.

The slot is real time to come (the replicas run on the real clock): the
first office day at least a week from today, 10:00 in Taipei.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as qpb
from eap.quota.v1 import quota_pb2_grpc
from services.office_calendar.shipped import load_shipped
from tests import county, replicas
from tests.matcher.test_booking import details
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TAIPEI = dt.timezone(dt.timedelta(hours=8))
CLIENTS = 100
HOLD_SECONDS = 5
TIMEOUT = 30.0


def _slot_day() -> dt.date:
    calendar = load_shipped()
    day = dt.datetime.now(TAIPEI).date() + dt.timedelta(days=7)
    while day.isoweekday() > 5 or (calendar.known(day) and not calendar.is_office_day(day)):
        day += dt.timedelta(days=1)
    return day


DAY = _slot_day()


def _at(hour: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=TAIPEI))
    return stamp


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with replicas.cluster(
        tmp_path,
        ["all"],
        2,
        "eap.matcher.v1.MatcherService",
        {"EAP_SLOT_HOLD_SECONDS": str(HOLD_SECONDS)},
    ) as running:
        yield running


def _case(n: int) -> pb.Case:
    return pb.Case(
        case_id=f"K{n:03d}",
        employee_id=f"E{n:03d}",
        agency_id="PT-HR",
        staff_category="official",
        category=pb.CATEGORY_PSYCHOLOGICAL,
        kind=pb.CASE_KIND_GENERAL,
        sessions_wanted=1,
        minutes=60,
        modalities=[pb.MODALITY_VIDEO],
        availability=[pb.TimeRange(start=_at(9), end=_at(17))],
        time_off=pb.TIME_OFF_LEAVE,
    )


async def _book(
    hold_on: matcher_pb2_grpc.MatcherServiceAsyncStub,
    confirm_on: matcher_pb2_grpc.MatcherServiceAsyncStub,
    case_id: str,
) -> pb.Booking | grpc.aio.AioRpcError:
    try:
        held = await hold_on.HoldSlot(
            pb.HoldSlotRequest(case_id=case_id, counselor_id="C001", start=_at(10)),
            timeout=TIMEOUT,
        )
        confirmed = await confirm_on.ConfirmBooking(
            pb.ConfirmBookingRequest(booking_id=held.booking.booking_id), timeout=TIMEOUT
        )
        return confirmed.booking
    except grpc.aio.AioRpcError as error:
        return error


def _rules(answers: Sequence[pb.Booking | grpc.aio.AioRpcError]) -> Counter[str]:
    found: Counter[str] = Counter()
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION, answer.details()
            failure = details(answer)["PreconditionFailure"]
            found[failure.violations[0].type] += 1  # type: ignore[attr-defined]
    return found


async def _sql(url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as connection:
        cursor = await connection.execute(query)
        return await cursor.fetchall()


async def test_a_hundred_people_one_slot_two_replicas(cluster: Cluster) -> None:
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    try:
        matchers = [matcher_pb2_grpc.MatcherServiceStub(c) for c in channels]
        quota = quota_pb2_grpc.QuotaServiceStub(channels[0])
        await county.seed(quota, year=DAY.year)  # type: ignore[arg-type]
        await county.enrol(matchers[0], [f"E{n:03d}" for n in range(CLIENTS + 2)])
        weekdays = [
            pb.WeeklyWindow(weekday=d, start_time="09:00", end_time="17:00") for d in range(1, 6)
        ]
        await matchers[0].UpsertCounselor(
            pb.UpsertCounselorRequest(
                counselor=pb.Counselor(
                    counselor_id="C001",
                    provider_id="P1",
                    display_name="Counselor Lin",
                    specialties=[pb.CATEGORY_PSYCHOLOGICAL],
                    modalities=[pb.MODALITY_VIDEO],
                    max_sessions_per_day=6,
                    weekly_availability=weekdays,
                )
            )
        )
        for n in range(CLIENTS + 2):
            await matchers[n % 2].SubmitCase(pb.SubmitCaseRequest(case=_case(n)))

        # Everyone at once; half hold on one replica and confirm on the other.
        answers = await asyncio.gather(
            *(_book(matchers[n % 2], matchers[(n // 2) % 2], f"K{n:03d}") for n in range(CLIENTS))
        )
        booked = [a for a in answers if isinstance(a, pb.Booking)]
        assert len(booked) == 1, _rules(answers)
        assert booked[0].state == pb.BOOKING_STATE_BOOKED
        assert _rules(answers) == Counter({"SLOT_TAKEN": CLIENTS - 1})

        # A lapsed hold and a fresh one on the same slot, confirmed at once
        # on different replicas: the fresh one wins, the lapsed one is told.
        late = await matchers[0].HoldSlot(
            pb.HoldSlotRequest(case_id=f"K{CLIENTS:03d}", counselor_id="C001", start=_at(14)),
            timeout=TIMEOUT,
        )
        await asyncio.sleep(HOLD_SECONDS + 0.5)
        fresh = await matchers[1].HoldSlot(
            pb.HoldSlotRequest(case_id=f"K{CLIENTS + 1:03d}", counselor_id="C001", start=_at(14)),
            timeout=TIMEOUT,
        )

        async def confirm(
            stub: matcher_pb2_grpc.MatcherServiceAsyncStub, booking_id: str
        ) -> pb.Booking | grpc.aio.AioRpcError:
            try:
                answer = await stub.ConfirmBooking(
                    pb.ConfirmBookingRequest(booking_id=booking_id), timeout=TIMEOUT
                )
                return answer.booking
            except grpc.aio.AioRpcError as error:
                return error

        lapsed, won = await asyncio.gather(
            confirm(matchers[1], late.booking.booking_id),
            confirm(matchers[0], fresh.booking.booking_id),
        )
        assert isinstance(won, pb.Booking) and won.state == pb.BOOKING_STATE_BOOKED
        assert _rules([lapsed]) == Counter({"HOLD_EXPIRED": 1})

        # Two bookings, paid for; no quota hold and no live slot hold left behind.
        agency = await quota.GetBalance(
            qpb.GetBalanceRequest(
                account=qpb.AccountRef(
                    kind=qpb.ACCOUNT_KIND_AGENCY, id="PT-HR", fiscal_year=DAY.year
                )
            )
        )
        assert (agency.balance.spent, agency.balance.held) == (2 * county.RATE, 0)
        states = dict(
            await _sql(
                cluster.database_url,
                "SELECT state, count(*) FROM matcher_bookings "
                "WHERE state <> 'held' OR hold_expires_at > now() GROUP BY state",
            )
        )
        assert states == {"booked": 2}
        quota_holds = dict(
            await _sql(
                cluster.database_url, "SELECT state, count(*) FROM quota_holds GROUP BY state"
            )
        )
        assert quota_holds == {"booked": 2}
    finally:
        for channel in channels:
            await channel.close()
