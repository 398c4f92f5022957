"""the audit trail of reads and disclosures of personal records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from services.runtime import audit

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audit.create_in_migration("quota")


def downgrade() -> None:
    audit.drop_in_migration("quota")
