"""bookings name the group session they belong to

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.add_column(
            sa.Column("group_id", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index("ix_matcher_bookings_group_id", ["group_id"])


def downgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.drop_index("ix_matcher_bookings_group_id")
        batch_op.drop_column("group_id")
