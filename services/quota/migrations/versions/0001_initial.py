"""ledger, holds, accounts

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_accounts",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("entitled", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("staff_category", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("kind", "owner_id", "fiscal_year", name=op.f("pk_quota_accounts")),
    )
    op.create_table(
        "quota_agencies",
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("agency_id", name=op.f("pk_quota_agencies")),
    )
    op.create_table(
        "quota_entitlement_policies",
        sa.Column("organisation", sa.String(length=64), nullable=False),
        sa.Column("staff_category", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organisation",
            "staff_category",
            "fiscal_year",
            name=op.f("pk_quota_entitlement_policies"),
        ),
    )
    op.create_table(
        "quota_grants",
        sa.Column("grant_id", sa.String(length=32), nullable=False),
        sa.Column("account_kind", sa.String(length=16), nullable=False),
        sa.Column("account_owner", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("approval_reference", sa.String(length=128), nullable=False),
        sa.Column("approver", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_quota_grants")),
    )
    op.create_table(
        "quota_holds",
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("employee_id", sa.String(length=64), nullable=False),
        sa.Column("agency_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("staff_category", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("session_month", sa.Integer(), nullable=False),
        sa.Column("iso_week", sa.String(length=8), nullable=False),
        sa.Column("session_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hourly_rate_ntd", sa.BigInteger(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("amount_ntd", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booking_ref", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_quota_holds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_quota_holds_idempotency_key")),
    )
    with op.batch_alter_table("quota_holds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_quota_holds_due",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("state = 'held'"),
            postgresql_where=sa.text("state = 'held'"),
        )
        batch_op.create_index("ix_quota_holds_usage", ["fiscal_year", "state"], unique=False)
        batch_op.create_index(
            "uq_quota_holds_employee_week_active",
            ["employee_id", "iso_week"],
            unique=True,
            sqlite_where=sa.text("state IN ('held', 'booked', 'completed')"),
            postgresql_where=sa.text("state IN ('held', 'booked', 'completed')"),
        )

    op.create_table(
        "quota_idempotency",
        sa.Column("operation", sa.String(length=24), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("operation", "key", name=op.f("pk_quota_idempotency")),
    )
    op.create_table(
        "quota_ledger",
        sa.Column(
            "entry_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_kind", sa.String(length=16), nullable=False),
        sa.Column("account_owner", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("delta_entitled", sa.BigInteger(), nullable=False),
        sa.Column("delta_held", sa.BigInteger(), nullable=False),
        sa.Column("delta_spent", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_quota_ledger")),
    )
    with op.batch_alter_table("quota_ledger", schema=None) as batch_op:
        batch_op.create_index(
            "ix_quota_ledger_account",
            ["account_kind", "account_owner", "fiscal_year", "entry_id"],
            unique=False,
        )

    op.create_table(
        "quota_provider_contracts",
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("hourly_rate_ntd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "provider_id", "fiscal_year", name=op.f("pk_quota_provider_contracts")
        ),
    )


def downgrade() -> None:
    op.drop_table("quota_provider_contracts")
    with op.batch_alter_table("quota_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_quota_ledger_account")

    op.drop_table("quota_ledger")
    op.drop_table("quota_idempotency")
    with op.batch_alter_table("quota_holds", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_quota_holds_employee_week_active",
            sqlite_where=sa.text("state IN ('held', 'booked', 'completed')"),
            postgresql_where=sa.text("state IN ('held', 'booked', 'completed')"),
        )
        batch_op.drop_index("ix_quota_holds_usage")
        batch_op.drop_index(
            "ix_quota_holds_due",
            sqlite_where=sa.text("state = 'held'"),
            postgresql_where=sa.text("state = 'held'"),
        )

    op.drop_table("quota_holds")
    op.drop_table("quota_grants")
    op.drop_table("quota_entitlement_policies")
    op.drop_table("quota_agencies")
    op.drop_table("quota_accounts")
