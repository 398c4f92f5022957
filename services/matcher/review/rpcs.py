"""gRPC translation of the programme's review (review.proto): the matcher's
aggregates for a quarter or a year, the satisfaction survey's beside them."""

from __future__ import annotations

from typing import Any

from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import review_pb2 as rpb
from services.matcher.review import figures, period
from services.matcher.survey.results import SatisfactionCell, satisfaction
from services.rules.disclosure import MIN_CELL_PEOPLE
from services.runtime import policy
from services.runtime.errors import InvalidArgument, PermissionDenied

Context = aio.ServicerContext[Any, Any]


def _count(value: int | None) -> int:
    return 0 if value is None else value


def _rate(part: int | None, whole: int | None) -> float:
    return part / whole if part is not None and whole else 0.0


def satisfaction_pb(cell: SatisfactionCell) -> rpb.ReviewSatisfactionCell:
    return rpb.ReviewSatisfactionCell(
        question_id=cell.question_id,
        provider_id=cell.provider_id,
        category=cell.category,
        responses=_count(cell.responses),
        mean=cell.mean or 0.0,
        has_mean=cell.mean is not None,
        suppressed=cell.suppressed,
    )


def review_pb(
    asked: period.Period, review: figures.Review, survey: list[SatisfactionCell]
) -> rpb.GetProgrammeReviewResponse:
    first_week, last_week = asked.weeks
    return rpb.GetProgrammeReviewResponse(
        period=asked.name,
        first_day=asked.first_day.isoformat(),
        last_day=asked.last_day.isoformat(),
        first_week=first_week,
        last_week=last_week,
        min_cell_people=MIN_CELL_PEOPLE,
        sessions=[
            rpb.ReviewSessionCell(
                category=c.category,
                modality=c.modality,
                sessions=_count(c.sessions),
                people=_count(c.people),
                suppressed=c.sessions is None,
            )
            for c in review.sessions
        ],
        waiting=[
            rpb.ReviewWaitingRow(
                category=w.category,
                cases=_count(w.cases),
                median_days=w.median_days or 0.0,
                p90_days=w.p90_days or 0.0,
                suppressed=w.cases is None,
            )
            for w in review.waiting
        ],
        attendance=[
            rpb.ReviewAttendanceRow(
                category=a.category,
                appointments=_count(a.appointments),
                no_shows=_count(a.no_shows),
                late_cancellations=_count(a.late_cancellations),
                no_show_rate=_rate(a.no_shows, a.appointments),
                late_cancellation_rate=_rate(a.late_cancellations, a.appointments),
                suppressed=a.appointments is None,
            )
            for a in review.attendance
        ],
        satisfaction=[satisfaction_pb(cell) for cell in survey],
        provider_ids=review.provider_ids,
    )


class ReviewRpcs:
    """This MatcherService RPC (MatcherServicer inherits it)."""

    _review_engine: AsyncEngine

    async def GetProgrammeReview(
        self, request: rpb.GetProgrammeReviewRequest, context: Context
    ) -> rpb.GetProgrammeReviewResponse:
        asked = period.parse(request.period)
        if asked is None:
            raise InvalidArgument.single(
                "period",
                f"a quarter, 2026-Q4, or a year, 2026 ({period.EARLIEST_YEAR}-"
                f"{period.LATEST_YEAR})",
            )
        # What follows names nobody: aggregates, which HR's scope reaches.
        policy.require_own(PermissionDenied("the review is for HR and administrators"))
        review = await figures.review(self._review_engine, asked)
        survey = await satisfaction(self._review_engine, *asked.weeks)
        return review_pb(asked, review, survey)
