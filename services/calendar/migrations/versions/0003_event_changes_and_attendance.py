"""event changes (state, sequence) and attendance

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calendar_events") as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="scheduled")
        )
        batch_op.add_column(sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "calendar_attendance",
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("event_uid", sa.String(length=255), nullable=False),
        sa.Column("person_id", sa.String(length=100), nullable=False),
        sa.Column("attended", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "plan_id", "event_uid", "person_id", name=op.f("pk_calendar_attendance")
        ),
    )


def downgrade() -> None:
    op.drop_table("calendar_attendance")
    with op.batch_alter_table("calendar_events") as batch_op:
        batch_op.drop_column("sequence")
        batch_op.drop_column("state")
