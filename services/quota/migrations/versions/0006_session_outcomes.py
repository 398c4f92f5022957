"""a hold records what became of its session (a no-show, a late
cancellation) and what the tenant's policy charged for it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quota_holds") as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(24), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("charge", sa.String(24), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("quota_holds") as batch_op:
        batch_op.drop_column("charge")
        batch_op.drop_column("outcome")
