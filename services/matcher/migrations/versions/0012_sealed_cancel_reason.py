"""a cancelled booking keeps the caller's reason sealed, instead of handing
it to the quota ledger

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.add_column(sa.Column("cancel_reason", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.drop_column("cancel_reason")
