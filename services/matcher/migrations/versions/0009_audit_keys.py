"""the audit trail's entries name the key that signed them

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from services.runtime import audit

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audit.add_key_ids_in_migration("matcher")


def downgrade() -> None:
    audit.drop_key_ids_in_migration("matcher")
