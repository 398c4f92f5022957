"""a waitlist: cases waiting for a slot, and the offers made to them

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.columns import UtcDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A case waits at most once at a time (booking/waitlist_rows.py).
LIVE = sa.text("state IN ('waiting', 'offered')")


def upgrade() -> None:
    op.create_table(
        "matcher_waitlist",
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("employee_id", sa.String(64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("crisis", sa.Boolean(), nullable=False),
        sa.Column("requeued", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("window_start", UtcDateTime(), nullable=False),
        sa.Column("window_end", UtcDateTime(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("counselor_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("earliest_time", sa.String(5), nullable=False, server_default=""),
        sa.Column("latest_time", sa.String(5), nullable=False, server_default=""),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("waiting_since", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sessions_at_join", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("offer_booking_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("offer_expires_at", UtcDateTime(), nullable=True),
        sa.Column("passed", sa.JSON(), nullable=False),
        sa.Column("lapses", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name="pk_matcher_waitlist"),
    )
    op.create_index(
        "ux_matcher_waitlist_live_case",
        "matcher_waitlist",
        ["case_id"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index("ix_matcher_waitlist_employee_id", "matcher_waitlist", ["employee_id"])
    op.create_index(
        "ix_matcher_waitlist_state_rank", "matcher_waitlist", ["state", "rank", "waiting_since"]
    )
    op.create_index(
        "ix_matcher_waitlist_offer_booking_id", "matcher_waitlist", ["offer_booking_id"]
    )


def downgrade() -> None:
    op.drop_table("matcher_waitlist")
