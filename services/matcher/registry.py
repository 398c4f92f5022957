"""The counselor registry: who can counsel on what, how, and when each week."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.orm import CounselorRow
from services.runtime.errors import NotFound
from services.runtime.fields import FieldChecker


class Category(StrEnum):
    PSYCHOLOGICAL = "psychological"
    LEGAL = "legal"
    FINANCIAL = "financial"
    FAMILY = "family"
    HEALTH = "health"
    MANAGEMENT = "management"


class Modality(StrEnum):
    IN_PERSON = "in_person"
    VIDEO = "video"
    PHONE = "phone"


@dataclass(frozen=True)
class WeeklyWindow:
    weekday: int  # ISO: 1 Monday ... 7 Sunday
    start: time
    end: time


class ExceptionKind(StrEnum):
    LEAVE = "leave"  # the range is taken out of the counselor's hours
    EXTRA = "extra"  # the range is added, holiday or not


@dataclass(frozen=True)
class AvailabilityException:
    kind: ExceptionKind
    start: datetime  # timezone-aware
    end: datetime
    note: str = ""


MAX_EXCEPTIONS = 200
LONGEST_EXCEPTION = timedelta(days=31)


@dataclass(frozen=True)
class Counselor:
    counselor_id: str
    provider_id: str
    display_name: str
    specialties: tuple[Category, ...]
    modalities: tuple[Modality, ...]
    location: str
    max_sessions_per_day: int
    weekly_availability: tuple[WeeklyWindow, ...]
    exceptions: tuple[AvailabilityException, ...] = ()


def validate(counselor: Counselor, checker: FieldChecker, prefix: str = "counselor") -> None:
    checker.identifier(counselor.counselor_id, f"{prefix}.counselor_id")
    checker.identifier(counselor.provider_id, f"{prefix}.provider_id")
    checker.require(
        0 < len(counselor.display_name) <= 200, f"{prefix}.display_name", "1-200 characters"
    )
    checker.require(bool(counselor.specialties), f"{prefix}.specialties", "at least one")
    checker.require(bool(counselor.modalities), f"{prefix}.modalities", "at least one")
    checker.require(len(counselor.location) <= 200, f"{prefix}.location", "at most 200 characters")
    checker.require(
        1 <= counselor.max_sessions_per_day <= 12, f"{prefix}.max_sessions_per_day", "1 to 12"
    )
    checker.require(
        len(counselor.weekly_availability) <= 50,
        f"{prefix}.weekly_availability",
        "at most 50 windows",
    )
    checker.require(
        len(counselor.exceptions) <= MAX_EXCEPTIONS,
        f"{prefix}.exceptions",
        f"at most {MAX_EXCEPTIONS}",
    )
    for n, exception in enumerate(counselor.exceptions):
        field = f"{prefix}.exceptions[{n}]"
        checker.require(exception.start < exception.end, f"{field}.range.end", "after start")
        checker.require(
            exception.end - exception.start <= LONGEST_EXCEPTION,
            f"{field}.range",
            "at most 31 days long",
        )
        checker.text(exception.note, f"{field}.note", 200)
    by_day: dict[int, list[WeeklyWindow]] = {}
    for n, window in enumerate(counselor.weekly_availability):
        field = f"{prefix}.weekly_availability[{n}]"
        checker.require(1 <= window.weekday <= 7, f"{field}.weekday", "1 (Monday) to 7 (Sunday)")
        checker.require(window.start < window.end, f"{field}.end_time", "after start_time")
        by_day.setdefault(window.weekday, []).append(window)
    for windows in by_day.values():
        windows.sort(key=lambda w: w.start)
        for earlier, later in itertools.pairwise(windows):
            if later.start < earlier.end:
                n = counselor.weekly_availability.index(later)
                checker.require(
                    False,
                    f"{prefix}.weekly_availability[{n}]",
                    "overlaps another window on the same weekday",
                )


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
