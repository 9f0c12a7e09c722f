"""retention: when a job's outputs were deleted by retention, and the runs of retention

Expand only (docs/upgrades.md): a nullable column and a new table, which an older replica never reads.

Revision ID: 0027
Revises: 0024
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outputs_deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    op.create_index(op.f("ix_retention_runs_started_at"), "retention_runs", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_retention_runs_started_at"), table_name="retention_runs")
    op.drop_table("retention_runs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("outputs_deleted_at")
