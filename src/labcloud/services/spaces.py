"""Paths as users see them, and the space each names.

A path ``projects/<slug>/rest`` is ``rest`` in the space of the shared project ``slug``; any other path
is in the user's personal space, as it always was. So the top of a user's files shows a folder
``projects`` (not stored: :func:`list_folder` makes it) whose folders are their shared projects.

:func:`locate` is the one place that turns such a path into a space and a path in it, and decides with
:func:`labcloud.services.projects.authorize` whether the user may: reading (list, download, a job's
input) takes ``READ`` (viewers), writing (upload, move, delete) ``RUN`` (members). To whom is no member,
the project's files do not exist (404); a role too low is 403.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Project, User
from labcloud.errors import Forbidden, InvalidInput, NotFound
from labcloud.services import files, job_files, projects
from labcloud.services.projects import Action

PROJECTS = "projects"


@dataclass(frozen=True)
class Place:
    """Where a user's path points: a space, the path in it ("" for its top), and what the user writes in
    front of paths of that space ("" for their personal space, ``projects/<slug>/`` for a shared one)."""

    space: files.Space
    path: str
    prefix: str

    def shown(self, entry: files.Entry) -> files.Entry:
        """The entry with its path as the user sees it."""
        return dataclasses.replace(entry, path=self.prefix + entry.path)


def _clean(raw: str, loc: list[str | int]) -> str:
    return "" if not raw.strip().strip("/") else files.clean(raw, loc)


def is_projects_folder(raw: str) -> bool:
    return raw.strip().strip("/") == PROJECTS


def locate(session: Session, user: User, raw: str, action: Action, loc: list[str | int]) -> Place:
    """The space and path ``raw`` names, if the user may do ``action`` there: NotFound for a project
    they are no member of (or none), Forbidden for a role too low."""
    path = _clean(raw, loc)
    top, _, rest = path.partition("/")
    if top != PROJECTS:
        return Place(files.Space(projects.personal(session, user).id, user.id), path, "")
    if not rest:
        raise NotFound("'projects' holds your projects' files; name one of them: projects/<slug>/...")
    slug, _, inner = rest.partition("/")
    project = session.scalar(select(Project).where(Project.slug == slug, Project.personal_user_id.is_(None)))
    if project is None:
        raise NotFound(f"You have no project {slug[:40]!r}.")
    projects.authorize(session, user, project, action)
    return Place(files.Space(project.id, user.id), inner, f"{PROJECTS}/{slug}/")


def prefix_of(session: Session, project_id: uuid.UUID) -> str:
    """What a user writes in front of the paths of this project's space."""
    project = session.get(Project, project_id)
    if project is None or project.personal_user_id is not None:
        return ""
    return f"{PROJECTS}/{project.slug}/"


def place(db: Database, user: User, raw: str, action: Action, loc: list[str | int]) -> Place:
    """:func:`locate` in a session of its own (for callers that must not hold one while bytes flow)."""
    with db.session() as session:
        return locate(session, user, raw, action, loc)


def writable(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """Whether the user still may write into the project's space (an upload finishing after they left
    the project, or lost their role, is refused like one starting then)."""
    user = session.get(User, user_id)
    project = session.get(Project, project_id)
    if user is None or project is None:
        raise NotFound("That space is gone.")
    if project.personal_user_id != user.id:
        projects.authorize(session, user, project, Action.RUN)


# ------------------------------------------------------------------------------------------ listings


def list_folder(
    session: Session, user: User, raw: str, *, limit: int, cursor: str | None
) -> tuple[list[files.Entry], str | None]:
    """One page of the folder ``raw`` as the user sees it: their personal top also shows ``projects``,
    and ``projects`` lists their shared projects as folders."""
    if is_projects_folder(raw):
        return shared_projects(session, user), None
    where = locate(session, user, raw, Action.READ, ["query", "prefix"])
    found, next_cursor = files.list_folder(session, where.space, where.path, limit=limit, cursor=cursor)
    entries = [where.shown(e) for e in found]
    if not where.prefix and not where.path:
        entries = _with_projects_folder(session, user, entries, cursor, next_cursor)
    return entries, next_cursor


def _with_projects_folder(
    session: Session, user: User, entries: list[files.Entry], cursor: str | None, next_cursor: str | None
) -> list[files.Entry]:
    """Put the folder ``projects`` in its place by name, on the page that covers that name (a stored
    entry of that name, from before projects had spaces, is hidden behind it)."""
    shared = shared_projects(session, user)
    if not shared:
        return entries
    after = files.decode_cursor(cursor) if cursor else ""
    if after >= PROJECTS or (next_cursor and entries and entries[-1].path < PROJECTS):
        return entries
    newest = max(e.modified_at for e in shared)
    folder = files.Entry(PROJECTS, files.FOLDER, sum(e.size for e in shared), newest)
    kept = [e for e in entries if e.path != PROJECTS]
    return sorted([*kept, folder], key=lambda e: e.path)


def shared_projects(session: Session, user: User) -> list[files.Entry]:
    """The user's shared projects as folders of ``projects`` (their size: the bytes the project uses)."""
    return [
        files.Entry(
            f"{PROJECTS}/{project.slug}", files.FOLDER, project.storage_used_bytes, project.updated_at
        )
        for project, _ in projects.mine(session, user)
        if project.personal_user_id is None
    ]


# ------------------------------------------------------------------------------------------ jobs


def job_input(session: Session, user: User, raw: str, loc: list[str | int]) -> FileEntry:
    """A job's input as its submitter names it, with the submitter's access (reading); InvalidInput at
    ``loc`` for anything the submitter cannot read."""
    try:
        where = locate(session, user, raw, Action.READ, loc)
    except (NotFound, Forbidden) as exc:
        raise InvalidInput.field(loc, exc.detail) from None
    if not where.path:
        raise InvalidInput.field(loc, "name a file or folder inside the project")
    return job_files.resolve_input(session, where.space, where.path, loc)


def job_input_of(session: Session, owner_id: uuid.UUID, raw: str, loc: list[str | int]) -> FileEntry:
    """:func:`job_input` for a job's owner, by id (staging a job: the access is checked again)."""
    user = session.get(User, owner_id)
    if user is None:
        raise InvalidInput.field(loc, "the job's owner is gone")
    return job_input(session, user, raw, loc)
