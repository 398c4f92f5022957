"""The calendar service's tables."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.columns import UtcDateTime


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"}
    )


class OfficeDayRow(Base):
    """One day of the national office calendar, as last imported for its year."""

    __tablename__ = "calendar_office_days"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, index=True)
    open: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(String(100), default="")


class PlanRow(Base):
    """A plan job: queued, running (on `worker`, alive while `heartbeat_at`
    moves), done or failed. The programme file is kept as submitted, so any
    replica can plan it, and planning it again gives the same event uids."""

    __tablename__ = "calendar_plans"
    plan_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str] = mapped_column(String(200))
    year: Mapped[int] = mapped_column(Integer)
    program_toml: Mapped[str] = mapped_column(Text)
    time_limit_seconds: Mapped[int] = mapped_column(Integer)
    unplaced: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    solver_status: Mapped[str] = mapped_column(String(20), default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(500), default="")
    worker: Mapped[str] = mapped_column(String(64), default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class EventRow(Base):
    """One planned event. `uid` is stable across re-plans of a programme,
    so it is unique within a plan only."""

    __tablename__ = "calendar_events"
    plan_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uid: Mapped[str] = mapped_column(String(255), primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    occurrence: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    start: Mapped[datetime] = mapped_column(UtcDateTime())
    end: Mapped[datetime] = mapped_column(UtcDateTime())
    room_id: Mapped[str] = mapped_column(String(100), default="")
    required: Mapped[list[str]] = mapped_column(JSON)
    optional_free: Mapped[list[str]] = mapped_column(JSON)
    audience: Mapped[list[str]] = mapped_column(JSON)
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="scheduled")  # or "cancelled"
    # RFC 5545 SEQUENCE: bumped by each move or cancellation, so calendars
    # that re-import the export take the change.
    sequence: Mapped[int] = mapped_column(Integer, default=0)


class EnrollmentRow(Base):
    """A person's place at a training or group session: a seat, a place in
    line (by `requested_at`), or cancelled."""

    __tablename__ = "calendar_enrollments"
    plan_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_uid: Mapped[str] = mapped_column(String(255), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sequence: Mapped[int] = mapped_column(Integer)  # order of requests within the event


class AttendanceRow(Base):
    """Whether a person came to an event, as recorded after it."""

    __tablename__ = "calendar_attendance"
    plan_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_uid: Mapped[str] = mapped_column(String(255), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    attended: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
