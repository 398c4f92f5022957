"""holds carry a group session's share of provider minutes and cost

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
    with op.batch_alter_table("quota_holds") as batch_op:
        batch_op.add_column(
            sa.Column("group_size", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("group_index", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("quota_holds") as batch_op:
        batch_op.drop_column("group_index")
        batch_op.drop_column("group_size")
