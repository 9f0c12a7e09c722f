"""claim index: the queued pull jobs, in claim order (a partial index)

Expand only (docs/upgrades.md): a new index, which an older replica's claims may use or ignore.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED_PULL = "state = 'queued' AND executor = 'pull'"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queued_pull",
        "jobs",
        ["id"],
        unique=False,
        sqlite_where=sa.text(QUEUED_PULL),
        postgresql_where=sa.text(QUEUED_PULL),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_pull", table_name="jobs")
