"""projects and their members; every user gets a personal project, and every job belongs to a project
(each existing job to its owner's personal one)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 16:30:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from labcloud.db.types import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("personal_user_id", sa.Uuid(), nullable=True),
        sa.Column("join_code_hash", sa.String(length=64), nullable=True),
        sa.Column("join_code_expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["personal_user_id"],
            ["users.id"],
            name=op.f("fk_projects_personal_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("slug", name=op.f("uq_projects_slug")),
        sa.UniqueConstraint("personal_user_id", name=op.f("uq_projects_personal_user_id")),
        sa.UniqueConstraint("join_code_hash", name=op.f("uq_projects_join_code_hash")),
    )
    members = op.create_table(
        "project_members",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_project_members_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_project_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "user_id", name=op.f("pk_project_members")),
    )
    op.create_index(op.f("ix_project_members_user_id"), "project_members", ["user_id"], unique=False)

    # Every existing user's personal project, with the user as its owner.
    users = sa.table(
        "users", sa.column("id", sa.Uuid()), sa.column("email", sa.String()), sa.column("name", sa.String())
    )
    conn = op.get_bind()
    now = datetime.now(UTC)
    rows, memberships = [], []
    for user_id, email, name in conn.execute(sa.select(users.c.id, users.c.email, users.c.name)):
        project_id = uuid.uuid4()
        rows.append(
            {
                "id": project_id,
                "slug": f"user-{user_id.hex[:12]}",
                "name": f"{name or email} (personal)"[:200],
                "description": "",
                "personal_user_id": user_id,
                "created_at": now,
                "updated_at": now,
            }
        )
        memberships.append({"project_id": project_id, "user_id": user_id, "role": "owner", "created_at": now})
    if rows:
        op.bulk_insert(projects, rows)
        op.bulk_insert(members, memberships)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project_id", sa.Uuid(), nullable=True))
    jobs = sa.table("jobs", sa.column("owner_id", sa.Uuid()), sa.column("project_id", sa.Uuid()))
    personal = (
        sa.select(projects.c.id).where(projects.c.personal_user_id == jobs.c.owner_id).scalar_subquery()
    )
    conn.execute(jobs.update().values(project_id=personal))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("project_id", existing_type=sa.Uuid(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_project_id_projects"), "projects", ["project_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_jobs_project_id_id", ["project_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_project_id_id")
        batch_op.drop_constraint(batch_op.f("fk_jobs_project_id_projects"), type_="foreignkey")
        batch_op.drop_column("project_id")
    op.drop_index(op.f("ix_project_members_user_id"), table_name="project_members")
    op.drop_table("project_members")
    op.drop_table("projects")
