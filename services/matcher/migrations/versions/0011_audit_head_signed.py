"""the audit trail's head is signed with the audit key, so that a trail cut
short or emptied, with its head rewritten to match, no longer verifies

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from services.runtime import audit

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    audit.sign_heads_in_migration("matcher")


def downgrade() -> None:
    audit.drop_head_signatures_in_migration("matcher")
