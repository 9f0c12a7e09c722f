"""a job keeps the exact content of its inputs: the stored object and checksum of each file, as submitted

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_inputs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.String(length=64), nullable=False),
        sa.Column("rel", sa.String(length=1024), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("blob_key", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_inputs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_inputs")),
    )
    op.create_index("uq_job_inputs_job_id_slot_rel", "job_inputs", ["job_id", "slot", "rel"], unique=True)
    op.create_index(op.f("ix_job_inputs_blob_key"), "job_inputs", ["blob_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_inputs_blob_key"), table_name="job_inputs")
    op.drop_index("uq_job_inputs_job_id_slot_rel", table_name="job_inputs")
    op.drop_table("job_inputs")
