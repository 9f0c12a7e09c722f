"""devices: a worker's status problems and when it was last sampled, the status schemas per label, and the
history samples

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_problems", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "device_schemas",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_device_schemas_updated_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("key", "value", name=op.f("pk_device_schemas")),
    )
    op.create_table(
        "device_samples",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.id"],
            name=op.f("fk_device_samples_worker_id_workers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_samples")),
    )
    op.create_index(op.f("ix_device_samples_at"), "device_samples", ["at"], unique=False)
    op.create_index("ix_device_samples_worker_id_at", "device_samples", ["worker_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_samples_worker_id_at", table_name="device_samples")
    op.drop_index(op.f("ix_device_samples_at"), table_name="device_samples")
    op.drop_table("device_samples")
    op.drop_table("device_schemas")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("sampled_at")
        batch_op.drop_column("status_problems")
