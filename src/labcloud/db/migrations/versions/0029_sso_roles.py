"""sso roles: what an identity's roles claim granted at its last login (to take back what it stops giving)

Expand only (docs/upgrades.md): one nullable column, which an older replica never reads.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sso_identities") as batch:
        batch.add_column(sa.Column("granted", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sso_identities") as batch:
        batch.drop_column("granted")
