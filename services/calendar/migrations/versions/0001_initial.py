"""initial

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_office_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_calendar_office_days")),
    )
    with op.batch_alter_table("calendar_office_days", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calendar_office_days_year"), ["year"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calendar_office_days", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calendar_office_days_year"))

    op.drop_table("calendar_office_days")
