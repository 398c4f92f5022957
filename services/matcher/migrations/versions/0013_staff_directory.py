"""the people directory HR keeps: each employee's agency and staff category,
which a case takes instead of the caller's word

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.columns import UtcDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "matcher_staff",
        sa.Column("employee_id", sa.String(64), nullable=False),
        sa.Column("agency_id", sa.String(64), nullable=False),
        sa.Column("staff_category", sa.String(64), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("employee_id", name="pk_matcher_staff"),
    )


def downgrade() -> None:
    op.drop_table("matcher_staff")
