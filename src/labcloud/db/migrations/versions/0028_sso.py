"""sso: accounts' identities at OpenID providers, and the ID tokens already used

Expand only (docs/upgrades.md): two new tables, which an older replica never reads.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sso_identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sso_identities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_identities")),
    )
    op.create_index(op.f("ix_sso_identities_user_id"), "sso_identities", ["user_id"], unique=False)
    op.create_index(
        "ix_sso_identities_provider_subject", "sso_identities", ["provider", "subject"], unique=True
    )
    op.create_table(
        "sso_used_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_sso_used_tokens")),
    )
    op.create_index(op.f("ix_sso_used_tokens_expires_at"), "sso_used_tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_sso_used_tokens_expires_at"), table_name="sso_used_tokens")
    op.drop_table("sso_used_tokens")
    op.drop_index("ix_sso_identities_provider_subject", table_name="sso_identities")
    op.drop_index(op.f("ix_sso_identities_user_id"), table_name="sso_identities")
    op.drop_table("sso_identities")
