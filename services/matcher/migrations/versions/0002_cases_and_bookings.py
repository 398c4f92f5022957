"""cases and bookings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "matcher_cases",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("employee_id", sa.String(length=64), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("staff_category", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("referral_reference", sa.String(length=64), nullable=False),
        sa.Column("sessions_wanted", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("availability", sa.JSON(), nullable=False),
        sa.Column("preferred_counselor_id", sa.String(length=64), nullable=False),
        sa.Column("excluded_counselor_ids", sa.JSON(), nullable=False),
        sa.Column("time_off", sa.String(length=16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_matcher_cases")),
    )
    op.create_index(op.f("ix_matcher_cases_employee_id"), "matcher_cases", ["employee_id"])
    op.create_table(
        "matcher_bookings",
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("employee_id", sa.String(length=64), nullable=False),
        sa.Column("counselor_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quota_hold_id", sa.String(length=64), nullable=False),
        sa.Column("funded", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("booking_id", name=op.f("pk_matcher_bookings")),
    )
    op.create_index(op.f("ix_matcher_bookings_case_id"), "matcher_bookings", ["case_id"])
    op.create_index(op.f("ix_matcher_bookings_employee_id"), "matcher_bookings", ["employee_id"])
    op.create_index(
        "ix_matcher_bookings_counselor_start", "matcher_bookings", ["counselor_id", "start"]
    )


def downgrade() -> None:
    op.drop_table("matcher_bookings")
    op.drop_table("matcher_cases")
