"""the audit trail of reads and disclosures of personal records

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from services.runtime import audit

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audit.create_in_migration("matcher")


def downgrade() -> None:
    audit.drop_in_migration("matcher")
