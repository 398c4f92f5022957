"""The matcher's counselor registry over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.service import MatcherService
from services.runtime.server import start
from tests.conftest import Backend
from tests.county import counselor
from tests.quota.test_rpcs import details, refused


@pytest.fixture
async def matcher(backend: Backend) -> AsyncIterator[matcher_pb2_grpc.MatcherServiceAsyncStub]:
    server = await start([MatcherService()], backend.settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield matcher_pb2_grpc.MatcherServiceStub(channel)
    await server.stop(0)


async def test_upsert_get_and_replace(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub) -> None:
    created = await matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor()))
    assert created.created
    fetched = (await matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="C001"))).counselor
    assert fetched == counselor()
    changed = counselor(max_sessions_per_day=6, specialties=[pb.CATEGORY_LEGAL])
    replaced = await matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=changed))
    assert not replaced.created
    fetched = (await matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="C001"))).counselor
    assert fetched.max_sessions_per_day == 6
    assert list(fetched.specialties) == [pb.CATEGORY_LEGAL]


async def test_list_filters_and_pages(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub) -> None:
    for n in range(7):
        specialties = [pb.CATEGORY_LEGAL] if n % 2 else [pb.CATEGORY_PSYCHOLOGICAL]
        await matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(
                counselor=counselor(
                    f"C{n:03d}", provider="P1" if n < 5 else "P2", specialties=specialties
                )
            )
        )
    ids: list[str] = []
    token = ""
    while True:
        page = await matcher.ListCounselors(
            pb.ListCounselorsRequest(provider_id="P1", page_size=2, page_token=token)
        )
        ids += [c.counselor_id for c in page.counselors]
        token = page.next_page_token
        if not token:
            break
    assert ids == ["C000", "C001", "C002", "C003", "C004"]
    legal = await matcher.ListCounselors(pb.ListCounselorsRequest(specialty=pb.CATEGORY_LEGAL))
    assert [c.counselor_id for c in legal.counselors] == ["C001", "C003", "C005"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"counselor_id": ""}, "counselor.counselor_id"),
        ({"specialties": []}, "counselor.specialties"),
        ({"specialties": [99]}, "counselor.specialties[0]"),
        ({"modalities": []}, "counselor.modalities"),
        ({"max_sessions_per_day": 0}, "counselor.max_sessions_per_day"),
        (
            {
                "weekly_availability": [
                    pb.WeeklyWindow(weekday=8, start_time="09:00", end_time="10:00")
                ]
            },
            "counselor.weekly_availability[0].weekday",
        ),
        (
            {
                "weekly_availability": [
                    pb.WeeklyWindow(weekday=2, start_time="9am", end_time="10:00")
                ]
            },
            "counselor.weekly_availability[0].start_time",
        ),
        (
            {
                "weekly_availability": [
                    pb.WeeklyWindow(weekday=2, start_time="11:00", end_time="10:00")
                ]
            },
            "counselor.weekly_availability[0].end_time",
        ),
        (
            {
                "weekly_availability": [
                    pb.WeeklyWindow(weekday=2, start_time="09:00", end_time="12:00"),
                    pb.WeeklyWindow(weekday=2, start_time="11:00", end_time="13:00"),
                ]
            },
            "counselor.weekly_availability[1]",
        ),
    ],
)
async def test_bad_counselors_are_refused_and_change_nothing(
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub, changes: dict[str, object], field: str
) -> None:
    error = await refused(
        matcher.UpsertCounselor(pb.UpsertCounselorRequest(counselor=counselor(**changes)))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert field in {v.field for v in violations}
    assert (await matcher.ListCounselors(pb.ListCounselorsRequest())).counselors == []


async def test_unknown_counselor(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub) -> None:
    error = await refused(matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="nobody")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await refused(matcher.ListCounselors(pb.ListCounselorsRequest(page_token="zz")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
