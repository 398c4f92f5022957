"""gRPC translation for the matcher service."""

from __future__ import annotations

from datetime import time
from typing import Any

from grpc import aio

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.registry import (
    Category,
    Counselor,
    CounselorRegistry,
    Modality,
    WeeklyWindow,
)
from services.runtime import paging
from services.runtime.fields import FieldChecker

Context = aio.ServicerContext[Any, Any]

CATEGORIES = {
    pb.CATEGORY_PSYCHOLOGICAL: Category.PSYCHOLOGICAL,
    pb.CATEGORY_LEGAL: Category.LEGAL,
    pb.CATEGORY_FINANCIAL: Category.FINANCIAL,
    pb.CATEGORY_FAMILY: Category.FAMILY,
    pb.CATEGORY_HEALTH: Category.HEALTH,
    pb.CATEGORY_MANAGEMENT: Category.MANAGEMENT,
}
MODALITIES = {
    pb.MODALITY_IN_PERSON: Modality.IN_PERSON,
    pb.MODALITY_VIDEO: Modality.VIDEO,
    pb.MODALITY_PHONE: Modality.PHONE,
}
_CATEGORY_PB = {v: k for k, v in CATEGORIES.items()}
_MODALITY_PB = {v: k for k, v in MODALITIES.items()}


def _clock(checker: FieldChecker, value: str, field: str) -> time:
    try:
        if len(value) != 5:
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        checker.require(False, field, "a time of day, HH:MM")
        return time(0)


def counselor_from_pb(message: pb.Counselor) -> Counselor:
    """The domain counselor, or INVALID_ARGUMENT naming every bad field."""
    checker = FieldChecker()
    for n, category in enumerate(message.specialties):
        checker.require(category in CATEGORIES, f"counselor.specialties[{n}]", "a known category")
    for n, modality in enumerate(message.modalities):
        checker.require(modality in MODALITIES, f"counselor.modalities[{n}]", "a known modality")
    windows = tuple(
        WeeklyWindow(
            w.weekday,
            _clock(checker, w.start_time, f"counselor.weekly_availability[{n}].start_time"),
            _clock(checker, w.end_time, f"counselor.weekly_availability[{n}].end_time"),
        )
        for n, w in enumerate(message.weekly_availability)
    )
    checker.raise_if_any()
    return Counselor(
        counselor_id=message.counselor_id,
        provider_id=message.provider_id,
        display_name=message.display_name,
        specialties=tuple(dict.fromkeys(CATEGORIES[s] for s in message.specialties)),
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in message.modalities)),
        location=message.location,
        max_sessions_per_day=message.max_sessions_per_day,
        weekly_availability=windows,
    )


def counselor_pb(counselor: Counselor) -> pb.Counselor:
    return pb.Counselor(
        counselor_id=counselor.counselor_id,
        provider_id=counselor.provider_id,
        display_name=counselor.display_name,
        specialties=[_CATEGORY_PB[s] for s in counselor.specialties],
        modalities=[_MODALITY_PB[m] for m in counselor.modalities],
        location=counselor.location,
        max_sessions_per_day=counselor.max_sessions_per_day,
        weekly_availability=[
            pb.WeeklyWindow(
                weekday=w.weekday,
                start_time=w.start.strftime("%H:%M"),
                end_time=w.end.strftime("%H:%M"),
            )
            for w in counselor.weekly_availability
        ],
    )


class MatcherServicer(matcher_pb2_grpc.MatcherServiceServicer):
    def __init__(self, registry: CounselorRegistry) -> None:
        self._registry = registry

    async def UpsertCounselor(
        self, request: pb.UpsertCounselorRequest, context: Context
    ) -> pb.UpsertCounselorResponse:
        counselor = counselor_from_pb(request.counselor)
        created = await self._registry.upsert(counselor)
        return pb.UpsertCounselorResponse(counselor=counselor_pb(counselor), created=created)

    async def GetCounselor(
        self, request: pb.GetCounselorRequest, context: Context
    ) -> pb.GetCounselorResponse:
        return pb.GetCounselorResponse(
            counselor=counselor_pb(await self._registry.get(request.counselor_id))
        )

    async def ListCounselors(
        self, request: pb.ListCounselorsRequest, context: Context
    ) -> pb.ListCounselorsResponse:
        size = paging.page_size(request.page_size, 100, 500)
        specialty = CATEGORIES.get(request.specialty)
        counselors = await self._registry.list(
            request.provider_id, specialty, paging.after(request.page_token), size + 1
        )
        page = counselors[:size]
        return pb.ListCounselorsResponse(
            counselors=[counselor_pb(c) for c in page],
            next_page_token=paging.page_token(page[-1].counselor_id)
            if len(counselors) > size
            else "",
        )
