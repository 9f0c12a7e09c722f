"""files live in a project's space: each file, folder and unfinished upload moves into its owner's
personal project, with the storage use; no object of the store is touched

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 18:00:00
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USERS = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("name", sa.String()),
    sa.column("storage_used_bytes", sa.BigInteger()),
)
PROJECTS = sa.table(
    "projects",
    sa.column("id", sa.Uuid()),
    sa.column("slug", sa.String()),
    sa.column("name", sa.String()),
    sa.column("description", sa.Text()),
    sa.column("personal_user_id", sa.Uuid()),
    sa.column("over_quota", sa.String()),
    sa.column("storage_used_bytes", sa.BigInteger()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
MEMBERS = sa.table(
    "project_members",
    sa.column("project_id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("role", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
SPACED = ("files", "uploads", "direct_uploads")


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("storage_used_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("storage_limit_bytes", sa.BigInteger(), nullable=True))
    _personal_projects_for_all()
    conn = op.get_bind()
    # The personal project holds what the user's files use (the user's column stays, kept equal to it).
    used = sa.select(USERS.c.storage_used_bytes).where(USERS.c.id == PROJECTS.c.personal_user_id)
    conn.execute(
        PROJECTS.update()
        .where(PROJECTS.c.personal_user_id.is_not(None))
        .values(storage_used_bytes=sa.func.coalesce(used.scalar_subquery(), 0))
    )
    for name in SPACED:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("project_id", sa.Uuid(), nullable=True))
        rows = sa.table(name, sa.column("owner_id", sa.Uuid()), sa.column("project_id", sa.Uuid()))
        personal = sa.select(PROJECTS.c.id).where(PROJECTS.c.personal_user_id == rows.c.owner_id)
        conn.execute(rows.update().values(project_id=personal.scalar_subquery()))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("project_id", existing_type=sa.Uuid(), nullable=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{name}_project_id_projects"),
                "projects",
                ["project_id"],
                ["id"],
                ondelete="CASCADE",
            )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("uq_files_owner_id_path")
        batch_op.drop_index("ix_files_owner_id_parent_name")
        batch_op.create_index("uq_files_project_id_path", ["project_id", "path"], unique=True)
        batch_op.create_index(
            "ix_files_project_id_parent_name", ["project_id", "parent", "name"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_files_owner_id"), ["owner_id"], unique=False)


def _personal_projects_for_all() -> None:
    """Users made since 0010 get their personal project when first needed: make the missing ones now."""
    conn = op.get_bind()
    having = sa.select(PROJECTS.c.personal_user_id).where(PROJECTS.c.personal_user_id.is_not(None))
    now = datetime.now(UTC)
    rows, memberships = [], []
    missing = sa.select(USERS.c.id, USERS.c.email, USERS.c.name).where(USERS.c.id.not_in(having))
    for user_id, email, name in conn.execute(missing):
        project_id = uuid.uuid4()
        rows.append(
            {
                "id": project_id,
                "slug": f"user-{user_id.hex[:12]}",
                "name": f"{name or email} (personal)"[:200],
                "description": "",
                "personal_user_id": user_id,
                "over_quota": "refuse",
                "storage_used_bytes": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        memberships.append({"project_id": project_id, "user_id": user_id, "role": "owner", "created_at": now})
    if rows:
        op.bulk_insert(PROJECTS, rows)
        op.bulk_insert(MEMBERS, memberships)


def downgrade() -> None:
    """Back to per-user spaces: files of shared projects have no place there and are dropped from the
    index (their objects stay until swept)."""
    conn = op.get_bind()
    shared = sa.select(PROJECTS.c.id).where(PROJECTS.c.personal_user_id.is_(None))
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_files_owner_id"))
        batch_op.drop_index("ix_files_project_id_parent_name")
        batch_op.drop_index("uq_files_project_id_path")
    for name in SPACED:
        rows = sa.table(name, sa.column("project_id", sa.Uuid()))
        conn.execute(rows.delete().where(rows.c.project_id.in_(shared)))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f(f"fk_{name}_project_id_projects"), type_="foreignkey")
            batch_op.drop_column("project_id")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_owner_id_parent_name", ["owner_id", "parent", "name"], unique=False)
        batch_op.create_index("uq_files_owner_id_path", ["owner_id", "path"], unique=True)
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("storage_limit_bytes")
        batch_op.drop_column("storage_used_bytes")
