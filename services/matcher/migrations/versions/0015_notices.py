"""the outbox: notices to people, written with the change they tell of

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.columns import UtcDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "matcher_notices",
        sa.Column("notice_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("employee_id", sa.String(64), nullable=False),
        sa.Column("booking_id", sa.String(64), nullable=False),
        sa.Column("session_key", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("start", UtcDateTime(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("place", sa.String(200), nullable=False, server_default=""),
        sa.Column("hold_until", UtcDateTime(), nullable=True),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("notice_id", name="pk_matcher_notices"),
    )
    op.create_index("ix_matcher_notices_booking_id", "matcher_notices", ["booking_id"])
    op.create_index("ix_matcher_notices_state_due_at", "matcher_notices", ["state", "due_at"])


def downgrade() -> None:
    op.drop_table("matcher_notices")
