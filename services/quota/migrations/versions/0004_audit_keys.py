"""the audit trail's entries name the key that signed them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from services.runtime import audit

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audit.add_key_ids_in_migration("quota")


def downgrade() -> None:
    audit.drop_key_ids_in_migration("quota")
