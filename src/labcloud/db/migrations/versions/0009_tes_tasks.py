"""GA4GH TES tasks: the task document of a job run as a task, its secret inline inputs, its output files;
and the steps of a job run in steps (each one's exit code and times)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("steps", sa.JSON(), nullable=True))
    op.create_table(
        "tes_tasks",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("contents", sa.JSON(), nullable=False),
        sa.Column("outputs_log", sa.JSON(), nullable=False),
        sa.Column("system_logs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_tes_tasks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_tes_tasks")),
    )


def downgrade() -> None:
    op.drop_table("tes_tasks")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("steps")
