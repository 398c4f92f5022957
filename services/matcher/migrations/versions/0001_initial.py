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
        "matcher_counselors",
        sa.Column("counselor_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("specialties", sa.JSON(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=False),
        sa.Column("max_sessions_per_day", sa.Integer(), nullable=False),
        sa.Column("weekly_availability", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("counselor_id", name=op.f("pk_matcher_counselors")),
    )
    with op.batch_alter_table("matcher_counselors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_matcher_counselors_provider_id"), ["provider_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("matcher_counselors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_matcher_counselors_provider_id"))

    op.drop_table("matcher_counselors")
