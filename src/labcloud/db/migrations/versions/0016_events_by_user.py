"""events by user in id order: an open page's poll for its user's job ends

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_events_user_id_id", "events", ["user_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_user_id_id", table_name="events")
