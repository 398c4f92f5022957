"""The matcher service's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.columns import UtcDateTime


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
    # [[kind, "start ISO", "end ISO", note], ...]: leave and extra hours.
    exceptions: Mapped[list[list[object]]] = mapped_column(JSON, default=list)
    # BCP 47 tags of the languages the counselor holds sessions in.
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The counselor's video room (an https:// link), for video sessions.
    video_link: Mapped[str] = mapped_column(String(500), default="")


class CaseRow(Base):
    __tablename__ = "matcher_cases"
    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    employee_id: Mapped[str] = mapped_column(String(64), index=True)  # pseudonymous
    agency_id: Mapped[str] = mapped_column(String(64))
    staff_category: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    referral_reference: Mapped[str] = mapped_column(String(64), default="")
    sessions_wanted: Mapped[int] = mapped_column(Integer)
    minutes: Mapped[int] = mapped_column(Integer)
    modalities: Mapped[list[str]] = mapped_column(JSON)
    # [["start ISO", "end ISO"], ...], aware times.
    availability: Mapped[list[list[str]]] = mapped_column(JSON)
    preferred_counselor_id: Mapped[str] = mapped_column(String(64), default="")
    excluded_counselor_ids: Mapped[list[str]] = mapped_column(JSON)
    time_off: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    accepts_group: Mapped[bool] = mapped_column(Boolean, default=False)
    # When its owner withdrew it (WithdrawCase); None while it is open.
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class BookingRow(Base):
    __tablename__ = "matcher_bookings"
    booking_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    employee_id: Mapped[str] = mapped_column(String(64), index=True)
    counselor_id: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(String(64))
    start: Mapped[datetime] = mapped_column(UtcDateTime())
    end: Mapped[datetime] = mapped_column(UtcDateTime())
    minutes: Mapped[int] = mapped_column(Integer)
    modality: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))  # booking.state.BookingState
    hold_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    quota_hold_id: Mapped[str] = mapped_column(String(64), default="")
    # True while the quota service holds this booking's spending (the
    # states in booking.state.CHARGED): kept in step with the state.
    funded: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The group session this booking is one participant's place in; empty
    # for an individual session. A group's places share the counselor's time.
    group_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    # A reschedule's new booking names the booking it replaces: while the
    # move is under way (the old one `moving`), this is how either is found.
    replaces_booking_id: Mapped[str] = mapped_column(String(64), default="")
    # The rule that refused the confirmation, for a caller that waited on it.
    outcome: Mapped[str] = mapped_column(String(32), default="")
    # Why it was cancelled, as the caller wrote it, sealed with the data keys
    # (registry/directory.py): free text never reaches the ledger or the audit.
    cancel_reason: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Where it takes place (booking/places.py), as it was when booked.
    location: Mapped[str] = mapped_column(String(200), default="")
    video_link: Mapped[str] = mapped_column(String(500), default="")
    # What became of the session (rules/attendance.py): attended, no-show,
    # late cancellation, cancelled by the counselor; empty while it is open.
    attendance: Mapped[str] = mapped_column(String(24), default="")

    __table_args__ = (Index("ix_matcher_bookings_counselor_start", "counselor_id", "start"),)


class BookingPolicyRow(Base):
    """The tenant's booking policy (booking/tenant_policy.py): one row, or none
    for the defaults."""

    __tablename__ = "matcher_booking_policy"
    policy_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    notice_hours: Mapped[int] = mapped_column(Integer)
    late_cancellation_charge: Mapped[str] = mapped_column(String(24))
    no_show_charge: Mapped[str] = mapped_column(String(24))
    # Hours before a session that reminders go out; None: the deployment's.
    reminder_hours: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PersonRow(Base):
    """A person's name and contacts, sealed (directory.py): never in clear."""

    __tablename__ = "matcher_people"
    employee_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StaffRow(Base):
    """One person of the people directory HR keeps (registry/staff.py)."""

    __tablename__ = "matcher_staff"
    employee_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # pseudonymous
    agency_id: Mapped[str] = mapped_column(String(64))
    staff_category: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class JobRow(Base):
    """A match job: queued, running (on `worker`, alive while `heartbeat_at`
    moves), done or failed. The instance is a snapshot taken at submission,
    in the benchmark format, so any replica can run it as it stood."""

    __tablename__ = "matcher_jobs"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    time_limit_seconds: Mapped[int] = mapped_column(Integer)
    instance: Mapped[dict[str, Any]] = mapped_column(JSON)
    # For a what-if job: the same instance without the budget changes.
    unchanged: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    sessions_without_what_if: Mapped[int] = mapped_column(Integer, default=0)
    best_score: Mapped[float] = mapped_column(Float, default=0.0)
    bound: Mapped[float] = mapped_column(Float, default=0.0)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(500), default="")
    worker: Mapped[str] = mapped_column(String(64), default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
