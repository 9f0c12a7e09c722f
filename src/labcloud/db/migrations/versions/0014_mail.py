"""e-mail when jobs end: each user's preference, a job's own, and which events were mailed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify_email", sa.String(length=16), nullable=False, server_default="always")
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify", sa.String(length=16), nullable=True))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_events_mailed_user_id", "events", ["mailed", "user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_mailed_user_id", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("mailed")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("notify")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("notify_email")
