"""a notice records the channels that delivered it, so that a retry goes
by the others only

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matcher_notices") as batch_op:
        batch_op.add_column(
            sa.Column("delivered_by", sa.String(32), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("matcher_notices") as batch_op:
        batch_op.drop_column("delivered_by")
