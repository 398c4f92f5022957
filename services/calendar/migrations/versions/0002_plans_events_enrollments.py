"""plans, their events, and enrollments

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
        "calendar_plans",
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("program_toml", sa.Text(), nullable=False),
        sa.Column("time_limit_seconds", sa.Integer(), nullable=False),
        sa.Column("unplaced", sa.JSON(), nullable=False),
        sa.Column("solver_status", sa.String(length=20), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_calendar_plans")),
    )
    op.create_index(op.f("ix_calendar_plans_state"), "calendar_plans", ["state"])
    op.create_table(
        "calendar_events",
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("activity_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("room_id", sa.String(length=100), nullable=False),
        sa.Column("required", sa.JSON(), nullable=False),
        sa.Column("optional_free", sa.JSON(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", "uid", name=op.f("pk_calendar_events")),
    )
    op.create_table(
        "calendar_enrollments",
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("event_uid", sa.String(length=255), nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "plan_id", "event_uid", "person_id", name=op.f("pk_calendar_enrollments")
        ),
    )


def downgrade() -> None:
    op.drop_table("calendar_enrollments")
    op.drop_table("calendar_events")
    op.drop_table("calendar_plans")
