"""a booking keeps where it takes place: the location or the video room

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.add_column(
            sa.Column("location", sa.String(200), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("video_link", sa.String(500), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("matcher_bookings") as batch_op:
        batch_op.drop_column("video_link")
        batch_op.drop_column("location")
