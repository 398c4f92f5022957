"""The counselor registry: who can counsel on what, how, and when each week."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.orm import CounselorRow
from services.matcher.registry.counselors import (
    AvailabilityException,
    Category,
    Counselor,
    ExceptionKind,
    Modality,
    WeeklyWindow,
    validate,
)
from services.runtime.errors import NotFound
from services.runtime.fields import FieldChecker


def _row(counselor: Counselor) -> CounselorRow:
    return CounselorRow(
        counselor_id=counselor.counselor_id,
        provider_id=counselor.provider_id,
        display_name=counselor.display_name,
        specialties=[s.value for s in counselor.specialties],
        modalities=[m.value for m in counselor.modalities],
        location=counselor.location,
        max_sessions_per_day=counselor.max_sessions_per_day,
        weekly_availability=[
            [w.weekday, w.start.strftime("%H:%M"), w.end.strftime("%H:%M")]
            for w in counselor.weekly_availability
        ],
        exceptions=[
            [e.kind.value, e.start.isoformat(), e.end.isoformat(), e.note]
            for e in counselor.exceptions
        ],
        languages=list(counselor.languages),
        video_link=counselor.video_link,
    )


def counselor_of(row: CounselorRow) -> Counselor:
    return Counselor(
        counselor_id=row.counselor_id,
        provider_id=row.provider_id,
        display_name=row.display_name,
        specialties=tuple(Category(s) for s in row.specialties),
        modalities=tuple(Modality(m) for m in row.modalities),
        location=row.location,
        max_sessions_per_day=row.max_sessions_per_day,
        weekly_availability=tuple(
            WeeklyWindow(int(str(d)), time.fromisoformat(str(s)), time.fromisoformat(str(e)))
            for d, s, e in row.weekly_availability
        ),
        exceptions=tuple(
            AvailabilityException(
                ExceptionKind(str(kind)),
                datetime.fromisoformat(str(start)),
                datetime.fromisoformat(str(end)),
                str(note),
            )
            for kind, start, end, note in row.exceptions or []
        ),
        languages=tuple(row.languages or ()),
        video_link=row.video_link or "",
    )


class CounselorRegistry:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def upsert(self, counselor: Counselor) -> bool:
        """Stores the counselor; True when it is new."""
        checker = FieldChecker()
        validate(counselor, checker)
        checker.raise_if_any()
        try:
            return await self._store(counselor)
        except IntegrityError:
            # A concurrent upsert created this counselor first: replace it.
            return await self._store(counselor)

    async def _store(self, counselor: Counselor) -> bool:
        async with self._sessions() as session, session.begin():
            existed = await session.get(CounselorRow, counselor.counselor_id) is not None
            await session.merge(_row(counselor))
        return not existed

    async def get(self, counselor_id: str) -> Counselor:
        async with self._sessions() as session:
            row = await session.get(CounselorRow, counselor_id)
        if row is None:
            raise NotFound("counselor_id names no counselor")
        return counselor_of(row)

    async def list(
        self, provider_id: str, specialty: Category | None, after: str | None, limit: int
    ) -> list[Counselor]:
        query = select(CounselorRow).order_by(CounselorRow.counselor_id)
        if provider_id:
            query = query.where(CounselorRow.provider_id == provider_id)
        if after is not None:
            query = query.where(CounselorRow.counselor_id > after)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        counselors = (counselor_of(row) for row in rows)
        chosen = [c for c in counselors if specialty is None or specialty in c.specialties]
        return chosen[:limit]
