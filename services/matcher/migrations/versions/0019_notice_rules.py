"""notice rules: a tenant's booking policy (notice period, what a late
cancellation and a no-show are charged), and a booking's attendance

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.columns import UtcDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "matcher_booking_policy",
        sa.Column("policy_id", sa.String(16), nullable=False),
        sa.Column("notice_hours", sa.Integer(), nullable=False),
        sa.Column("late_cancellation_charge", sa.String(24), nullable=False),
        sa.Column("no_show_charge", sa.String(24), nullable=False),
        sa.Column("reminder_hours", sa.JSON(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("policy_id", name="pk_matcher_booking_policy"),
    )
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.add_column(
            sa.Column("attendance", sa.String(24), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.drop_column("attendance")
    op.drop_table("matcher_booking_policy")
