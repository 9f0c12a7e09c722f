"""jobs that run only on named workers, jobs submitted together (sessions, sweeps), where a worker is

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_groups",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("entrypoint", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_job_groups_owner_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_job_groups_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_groups")),
    )
    op.create_index("ix_job_groups_owner_id_id", "job_groups", ["owner_id", "id"], unique=False)
    op.create_index(op.f("ix_job_groups_project_id"), "job_groups", ["project_id"], unique=False)
    op.create_table(
        "job_targets",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_targets_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"], ["workers.id"], name=op.f("fk_job_targets_worker_id_workers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "worker_id", name=op.f("pk_job_targets")),
    )
    op.create_index("ix_job_targets_worker_id_job_id", "job_targets", ["worker_id", "job_id"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("targeted", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("group_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_group_id"), ["group_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_group_id_job_groups"), "job_groups", ["group_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("location", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("description")
        batch_op.drop_column("location")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_group_id_job_groups"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_group_id"))
        batch_op.drop_column("group_id")
        batch_op.drop_column("targeted")
    op.drop_index("ix_job_targets_worker_id_job_id", table_name="job_targets")
    op.drop_table("job_targets")
    op.drop_index(op.f("ix_job_groups_project_id"), table_name="job_groups")
    op.drop_index("ix_job_groups_owner_id_id", table_name="job_groups")
    op.drop_table("job_groups")
