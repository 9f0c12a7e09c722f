"""How much a project's space may hold: the limits (an admin's, a user's, the installation's defaults),
the room left for a file, and booking bytes against the limit in one conditional update."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labcloud.db.models import Project, User
from labcloud.errors import LabcloudError, NotFound
from labcloud.services import audit
from labcloud.settings import Settings


class TooLarge(LabcloudError):
    status, title, type_slug = 413, "Too large", "too-large"


def usage(session: Session, settings: Settings, project_id: uuid.UUID) -> tuple[int, int | None]:
    """Bytes the project's space uses and its limit (None: no limit)."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound("No such project.")
    return project.storage_used_bytes, limit_of(session, settings, project)


def limit_of(session: Session, settings: Settings, project: Project) -> int | None:
    """A limit an admin set for the project; else, for a personal project, its user's limit (or the
    installation's default per user), for a shared one the installation's default per project."""
    if project.storage_limit_bytes is not None:
        return project.storage_limit_bytes or None
    if project.personal_user_id is None:
        return settings.project_storage_bytes or None
    user = session.get(User, project.personal_user_id)
    if user is None:
        raise NotFound("No such user.")
    limit = user.storage_limit_bytes if user.storage_limit_bytes is not None else settings.storage_quota_bytes
    return limit or None


def set_limit(session: Session, project: Project, limit: int | None) -> None:
    """An admin's storage limit for the project (0: none; None: back to the default); what is stored
    already stays even if it is more."""
    if limit != project.storage_limit_bytes:
        details = {"project": project.slug, "from": project.storage_limit_bytes, "to": limit}
        audit.record(session, "quota.storage_limit_changed", "project", project.id, details)
    project.storage_limit_bytes = limit
    session.flush()


def room(
    session: Session, settings: Settings, project_id: uuid.UUID, replaced: int = 0
) -> tuple[int | None, int | None]:
    """Bytes a file may hold in the project's space (the ``replaced`` bytes of the file it replaces count
    as free) and the limit; (None, None) when there is no limit."""
    used, limit = usage(session, settings, project_id)
    if limit is None:
        return None, None
    return max(limit - used + replaced, 0), limit


def no_room(length: int, room: int, limit: int) -> str:
    return (
        f"The file is {length} bytes but only {max(room, 0)} bytes are left of your storage limit of "
        f"{limit} bytes; delete files or ask an administrator for more room."
    )


def book(session: Session, project_id: uuid.UUID, delta: int, limit: int | None) -> None:
    """Add ``delta`` bytes to the project's use; given a ``limit``, only if the use stays within it. A
    personal project's use is also its user's (``users.storage_used_bytes``, shown with the account).

    One conditional UPDATE, so concurrent uploads can't together pass the limit.
    """
    stmt = update(Project).where(Project.id == project_id)
    if delta > 0 and limit is not None:
        stmt = stmt.where(Project.storage_used_bytes + delta <= limit)
    result = session.execute(
        stmt.values(storage_used_bytes=Project.storage_used_bytes + delta).returning(
            Project.personal_user_id
        ),
        execution_options={"synchronize_session": False},
    )
    booked = result.first()
    if booked is None:
        used = session.scalar(select(Project.storage_used_bytes).where(Project.id == project_id))
        if used is None:
            raise NotFound("No such project.")
        assert limit is not None
        raise TooLarge(no_room(delta, limit - used, limit))
    if booked.personal_user_id is not None and delta:
        session.execute(
            update(User)
            .where(User.id == booked.personal_user_id)
            .values(storage_used_bytes=User.storage_used_bytes + delta),
            execution_options={"synchronize_session": False},
        )
