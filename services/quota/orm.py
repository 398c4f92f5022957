"""The quota service's tables.

Accounts carry running totals so that a check reads one row; the ledger is
append-only and the totals must always equal its sums (`eapctl quota verify`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    MetaData,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.columns import UtcDateTime

# SQLite only auto-increments INTEGER PRIMARY KEY.
AutoId = BigInteger().with_variant(Integer, "sqlite")


ACTIVE_HOLD_STATES = ("held", "booked", "completed")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Agency(Base):
    __tablename__ = "quota_agencies"
    agency_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))


class ProviderContract(Base):
    __tablename__ = "quota_provider_contracts"
    provider_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fiscal_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    hourly_rate_ntd: Mapped[int] = mapped_column(BigInteger)


class EntitlementPolicy(Base):
    __tablename__ = "quota_entitlement_policies"
    organisation: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_category: Mapped[str] = mapped_column(String(64), primary_key=True)
    fiscal_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    minutes: Mapped[int] = mapped_column(BigInteger)


class Account(Base):
    """Running totals of one employee, provider or agency in one fiscal year."""

    __tablename__ = "quota_accounts"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fiscal_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    entitled: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    # Employees only: the category their entitlement was opened with.
    staff_category: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Hold(Base):
    __tablename__ = "quota_holds"
    hold_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    employee_id: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(String(64))
    staff_category: Mapped[str] = mapped_column(String(64))
    fiscal_year: Mapped[int] = mapped_column(Integer)
    session_month: Mapped[int] = mapped_column(Integer)
    iso_week: Mapped[str] = mapped_column(String(8))
    session_start: Mapped[datetime] = mapped_column(UtcDateTime())
    hourly_rate_ntd: Mapped[int] = mapped_column(BigInteger)
    minutes: Mapped[int] = mapped_column(Integer)
    amount_ntd: Mapped[int] = mapped_column(BigInteger)
    # A group session's participants share its provider minutes and cost
    # (domain.Share); an individual session is the share 0 of 1.
    group_size: Mapped[int] = mapped_column(Integer, default=1)
    group_index: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    booking_ref: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The client's key for the reservation and a digest of its request: a
    # retry with the same key gets this hold back, a different request with
    # it is refused.
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # What became of the session (rules.attendance.Attendance: a no-show, a
    # late cancellation) and what it was charged (Charge); empty for a
    # session that took place or is still to come.
    outcome: Mapped[str] = mapped_column(String(24), default="")
    charge: Mapped[str] = mapped_column(String(24), default="")

    __table_args__ = (
        # The weekly rule, enforced by the database as well as by the check:
        # one active session per employee per ISO week.
        Index(
            "uq_quota_holds_employee_week_active",
            "employee_id",
            "iso_week",
            unique=True,
            sqlite_where=text("state IN ('held', 'booked', 'completed')"),
            postgresql_where=text("state IN ('held', 'booked', 'completed')"),
        ),
        Index(
            "ix_quota_holds_due",
            "expires_at",
            sqlite_where=text("state = 'held'"),
            postgresql_where=text("state = 'held'"),
        ),
        Index("ix_quota_holds_usage", "fiscal_year", "state"),
    )


class LedgerEntry(Base):
    """One change to one account. Never updated, never deleted."""

    __tablename__ = "quota_ledger"
    entry_id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    account_kind: Mapped[str] = mapped_column(String(16))
    account_owner: Mapped[str] = mapped_column(String(64))
    fiscal_year: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    delta_entitled: Mapped[int] = mapped_column(BigInteger, default=0)
    delta_held: Mapped[int] = mapped_column(BigInteger, default=0)
    delta_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500), default="")
    reference: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (
        Index(
            "ix_quota_ledger_account", "account_kind", "account_owner", "fiscal_year", "entry_id"
        ),
    )


class Grant(Base):
    __tablename__ = "quota_grants"
    grant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_kind: Mapped[str] = mapped_column(String(16))
    account_owner: Mapped[str] = mapped_column(String(64))
    fiscal_year: Mapped[int] = mapped_column(Integer)
    minutes: Mapped[int] = mapped_column(Integer)
    approval_reference: Mapped[str] = mapped_column(String(128))
    approver: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IdempotencyRecord(Base):
    """The first answer to a client-keyed grant, top-up or transfer: which
    request, and what it made. (Reservations keep theirs on the hold.)"""

    __tablename__ = "quota_idempotency"
    operation: Mapped[str] = mapped_column(String(24), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
