"""bookings name the booking a reschedule replaces, and the rule that refused
a confirmation

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.add_column(
            sa.Column("replaces_booking_id", sa.String(64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("outcome", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.drop_column("outcome")
        batch_op.drop_column("replaces_booking_id")
