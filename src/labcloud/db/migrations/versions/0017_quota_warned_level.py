"""quota.warning events: the level of use (0, 80 or 100 percent) a quota's project was last told of

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("project_quotas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warned_level", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("project_quotas", schema=None) as batch_op:
        batch_op.drop_column("warned_level")
