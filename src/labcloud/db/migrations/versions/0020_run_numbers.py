"""run numbers: each user's jobs are numbered 1, 2, 3... in the order they were submitted

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jobs_submitted", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_number", sa.Integer(), nullable=False, server_default="0"))
    # The jobs there are, numbered per owner by submission (window functions: SQLite 3.25+, PostgreSQL).
    op.execute(
        """
        UPDATE jobs SET run_number = (
            SELECT n FROM (
                SELECT id, ROW_NUMBER() OVER (PARTITION BY owner_id ORDER BY created_at, id) AS n FROM jobs
            ) numbered WHERE numbered.id = jobs.id
        )
        """
    )
    op.execute(
        "UPDATE users SET jobs_submitted = "
        "(SELECT COALESCE(MAX(run_number), 0) FROM jobs WHERE jobs.owner_id = users.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run_number")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("jobs_submitted")
