"""satisfaction survey: one-time links and answers kept apart from people and sessions

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.runtime.columns import UtcDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite numbers an ordinary table's rows in insertion order; these tables
# must not keep one (survey/rows.py).
NO_ROWID = {"sqlite_with_rowid": False}


def upgrade() -> None:
    op.create_table(
        "matcher_survey_invitations",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("iso_week", sa.String(8), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_matcher_survey_invitations"),
        **NO_ROWID,
    )
    op.create_table(
        "matcher_survey_answers",
        sa.Column("answer_id", sa.String(32), nullable=False),
        sa.Column("iso_week", sa.String(8), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("question_id", sa.String(32), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("text", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("answer_id", name="pk_matcher_survey_answers"),
        **NO_ROWID,
    )
    op.create_table(
        "matcher_survey_questions",
        sa.Column("question_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("prompt", sa.String(300), nullable=False),
        sa.PrimaryKeyConstraint("question_id", name="pk_matcher_survey_questions"),
    )


def downgrade() -> None:
    op.drop_table("matcher_survey_questions")
    op.drop_table("matcher_survey_answers")
    op.drop_table("matcher_survey_invitations")
