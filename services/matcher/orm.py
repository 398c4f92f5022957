"""The matcher service's tables."""

from __future__ import annotations

from sqlalchemy import JSON, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"}
    )


class CounselorRow(Base):
    __tablename__ = "matcher_counselors"
    counselor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    specialties: Mapped[list[str]] = mapped_column(JSON)
    modalities: Mapped[list[str]] = mapped_column(JSON)
    location: Mapped[str] = mapped_column(String(200), default="")
    max_sessions_per_day: Mapped[int] = mapped_column(Integer)
    # [[weekday, "HH:MM", "HH:MM"], ...], Asia/Taipei wall-clock times.
    weekly_availability: Mapped[list[list[object]]] = mapped_column(JSON)
