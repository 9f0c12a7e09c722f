"""dispatch index: the jobs a dispatcher may start, by executor, owner and age (a partial index)

Expand only (docs/upgrades.md): a new index, which an older replica's dispatcher may use or ignore.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING_HERE = "state = 'queued' AND worker_id IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_waiting_executor_owner_id_id",
        "jobs",
        ["executor", "owner_id", "id"],
        unique=False,
        sqlite_where=sa.text(WAITING_HERE),
        postgresql_where=sa.text(WAITING_HERE),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_waiting_executor_owner_id_id", table_name="jobs")
