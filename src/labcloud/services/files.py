"""File spaces: an index of paths in the database over immutable objects in the store.

Every project has a space (:class:`Space`); a user's own files are in their personal project's. Listing,
renaming and moving a folder change rows only, and the project's storage use is booked in the same
transaction as the rows (so it is always known). Which space a path a user gives names, and whether they
may use it, is :mod:`labcloud.services.spaces`. This module is the index: paths, listings, moves,
deletes, the objects a publish or a job's outputs bring, and a job's inputs and outputs. Receiving bytes
and putting them into the store is :mod:`labcloud.services.file_store`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Job, Project, User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, LabcloudError, NotFound
from labcloud.settings import Settings
from labcloud.storage.base import Storage
from labcloud.storage.paths import clean_path

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
FOLDER, FILE = "folder", "file"


class TooLarge(LabcloudError):
    status, title, type_slug = 413, "Too large", "too-large"


@dataclass
class Entry:
    path: str
    type: str  # "file" | "folder"
    size: int
    modified_at: datetime
    sha256: str | None = None
    job_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None  # the space it is in

    @classmethod
    def of(cls, row: FileEntry) -> Entry:
        return cls(row.path, row.kind, row.size, row.modified_at, row.sha256, row.job_id, row.project_id)


@dataclass(frozen=True)
class Space:
    """A project's file space, and the user acting in it (the owner of the rows they write)."""

    project_id: uuid.UUID
    user_id: uuid.UUID


@dataclass
class Upload:
    """One object to publish: a complete local file, its size and checksum, and where it goes (the
    index takes all but the local file)."""

    path: str
    source: Path
    size: int
    sha256: str


# ------------------------------------------------------------------------------------------------ paths


def clean(raw: str, loc: list[str | int]) -> str:
    """The normalised relative path, or InvalidInput naming ``loc``."""
    path = clean_path(raw, loc).as_posix()
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidInput.field(loc, f"the path is longer than {MAX_PATH_BYTES} bytes")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in path.split("/")):
        raise InvalidInput.field(loc, f"a file or folder name is longer than {MAX_NAME_BYTES} bytes")
    return path


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _below(path: str) -> tuple[str, str]:
    """Bounds of every path strictly inside the folder ``path``: '/' + 1 is '0'."""
    return path + "/", path + "0"


def _inside(column: InstrumentedAttribute[str], path: str) -> ColumnElement[bool]:
    low, high = _below(path)
    return and_(column >= low, column < high)


# ------------------------------------------------------------------------------------------------ reads


def _row(session: Session, space: Space, path: str) -> FileEntry | None:
    return session.scalar(
        select(FileEntry).where(FileEntry.project_id == space.project_id, FileEntry.path == path)
    )


def get(session: Session, space: Space, raw_path: str, loc: list[str | int]) -> FileEntry:
    """The file or folder at ``raw_path``; NotFound (also for another user's path)."""
    path = clean(raw_path, loc)
    row = _row(session, space, path)
    if row is None:
        raise NotFound(f"You have no file or folder '{path}'.")
    return row


def files_under(session: Session, space: Space, folder: str) -> list[FileEntry]:
    """Every file inside ``folder`` (any depth), by path."""
    stmt = select(FileEntry).where(
        FileEntry.project_id == space.project_id,
        FileEntry.kind == FILE,
        _inside(FileEntry.path, folder),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def list_paths(session: Session, space: Space, kind: str, limit: int) -> list[str]:
    """Paths of the user's files (or folders) by path, job outputs (``jobs/...``) after the user's own."""
    base = select(FileEntry.path).where(FileEntry.project_id == space.project_id, FileEntry.kind == kind)
    in_jobs = or_(FileEntry.path == "jobs", _inside(FileEntry.path, "jobs"))
    paths = list(session.scalars(base.where(~in_jobs).order_by(FileEntry.path).limit(limit)))
    if len(paths) < limit:
        paths += session.scalars(base.where(in_jobs).order_by(FileEntry.path).limit(limit - len(paths)))
    return paths


def list_folder(
    session: Session, space: Space, prefix: str, *, limit: int, cursor: str | None
) -> tuple[list[Entry], str | None]:
    """One page of a folder's entries by name. A prefix naming a file lists that file."""
    parent = "" if not prefix.strip().strip("/") else clean(prefix, ["query", "prefix"])
    if parent:
        row = _row(session, space, parent)
        if row is None:
            raise NotFound(f"You have no folder '{parent}'.")
        if row.kind == FILE:
            return [Entry.of(row)], None
    stmt = select(FileEntry).where(FileEntry.project_id == space.project_id, FileEntry.parent == parent)
    if cursor:
        stmt = stmt.where(FileEntry.name > decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(FileEntry.name).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = base64.urlsafe_b64encode(rows[-1].name.encode()).decode() if more and rows else None
    return [Entry.of(r) for r in rows], next_cursor


def decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput.field(["query", "cursor"], "cursor is not one this server gave out") from None


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
    project.storage_limit_bytes = limit
    session.flush()


# -------------------------------------------------------------------------------- room, destinations


def room(
    session: Session, settings: Settings, space: Space, path: str | None
) -> tuple[int | None, int | None]:
    """Bytes a file at ``path`` may hold (the file it replaces counts as free) and the user's limit;
    (None, None) when the user has no limit."""
    used, limit = usage(session, settings, space.project_id)
    if limit is None:
        return None, None
    replaced = 0
    if path is not None and (row := _row(session, space, path)) is not None and row.kind == FILE:
        replaced = row.size
    return max(limit - used + replaced, 0), limit


def no_room(length: int, room: int, limit: int) -> str:
    return (
        f"The file is {length} bytes but only {max(room, 0)} bytes are left of your storage limit of "
        f"{limit} bytes; delete files or ask an administrator for more room."
    )


def check_target(db: Database, space: Space, path: str, loc: list[str | int]) -> None:
    """Refuse a destination that is a folder or lies inside a file."""
    with db.session() as session:
        _check_target(session, space, path, loc)


def _check_target(session: Session, space: Space, path: str, loc: list[str | int]) -> None:
    wanted = [*_ancestors(path), path]
    rows = session.scalars(
        select(FileEntry).where(FileEntry.project_id == space.project_id, FileEntry.path.in_(wanted))
    ).all()
    for row in rows:
        if row.path == path and row.kind == FOLDER:
            raise InvalidInput.field(loc, f"'{path}' is a folder")
        if row.path != path and row.kind == FILE:
            raise InvalidInput.field(loc, f"'{row.path}' is a file, so it cannot hold '{path}'")


# ------------------------------------------------------------------------------------------ indexing


def index_objects(
    session: Session,
    settings: Settings,
    space: Space,
    uploads: list[Upload],
    keys: list[str],
    *,
    job_id: uuid.UUID | None,
    enforce: bool,
) -> tuple[list[Entry], list[str]]:
    """Index objects already in the store (``keys``, one per upload) in the caller's transaction, and
    book their size (within the user's limit if ``enforce``); the entries, and the keys of the objects
    they replace (to delete once it commits)."""
    now = utcnow()
    delta = 0
    replaced: list[str] = []
    rows: list[FileEntry] = []
    for item, key in zip(uploads, keys, strict=True):
        _check_target(session, space, item.path, ["path"])
        _ensure_folders(session, space, item.path, now)
        row = _row(session, space, item.path)
        if row is None:
            parent, name = _split(item.path)
            row = FileEntry(
                project_id=space.project_id,
                owner_id=space.user_id,
                path=item.path,
                parent=parent,
                name=name,
                kind=FILE,
            )
            row.created_at = now
            session.add(row)
        else:
            delta -= row.size
            if row.blob_key:
                replaced.append(row.blob_key)
        delta += item.size
        row.size, row.sha256, row.blob_key, row.job_id, row.modified_at = (
            item.size,
            item.sha256,
            key,
            job_id,
            now,
        )
        rows.append(row)
        session.flush()
    _book(
        session, space.project_id, delta, usage(session, settings, space.project_id)[1] if enforce else None
    )
    return [Entry.of(r) for r in rows], replaced


def _ensure_folders(session: Session, space: Space, path: str, now: datetime) -> None:
    for folder in _ancestors(path):
        row = _row(session, space, folder)
        if row is None:
            parent, name = _split(folder)
            session.add(
                FileEntry(
                    project_id=space.project_id,
                    owner_id=space.user_id,
                    path=folder,
                    parent=parent,
                    name=name,
                    kind=FOLDER,
                    created_at=now,
                    modified_at=now,
                )
            )
            session.flush()
        else:
            row.modified_at = now


def _book(session: Session, project_id: uuid.UUID, delta: int, limit: int | None) -> None:
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


# ------------------------------------------------------------------------------------- moves, deletes


def move(db: Database, space: Space, raw_from: str, raw_to: str) -> Entry:
    """Rename a file or folder (with everything in it). The destination must not exist."""
    src = clean(raw_from, ["body", "from"])
    dst = clean(raw_to, ["body", "to"])
    if dst == src or dst.startswith(src + "/"):
        raise InvalidInput.field(["body", "to"], "a folder cannot be moved into itself")
    with db.session() as session:
        row = _row(session, space, src)
        if row is None:
            raise NotFound(f"You have no file or folder '{src}'.")
        if _row(session, space, dst) is not None:
            raise Conflict(f"'{dst}' already exists; delete it first or pick another name.")
        _check_target(session, space, dst, ["body", "to"])
        now = utcnow()
        _ensure_folders(session, space, dst, now)
        moved = [row]
        if row.kind == FOLDER:
            moved += session.scalars(
                select(FileEntry).where(
                    FileEntry.project_id == space.project_id, _inside(FileEntry.path, src)
                )
            ).all()
        for item in moved:
            item.path = dst + item.path[len(src) :]
            item.parent, item.name = _split(item.path)
        row.modified_at = now
        session.flush()
        return Entry.of(row)


def delete_path(db: Database, storage: Storage, space: Space, raw_path: str) -> int:
    """Delete a file, or a folder with everything in it; returns the number of files removed."""
    path = clean(raw_path, ["path", "path"])
    with db.session() as session:
        row = _row(session, space, path)
        if row is None:
            raise NotFound(f"You have no file or folder '{path}'.")
        rows = [row] + (files_under(session, space, path) if row.kind == FOLDER else [])
        keys = [r.blob_key for r in rows if r.blob_key]
        freed = sum(r.size for r in rows if r.kind == FILE)
        session.execute(
            delete(FileEntry).where(
                FileEntry.project_id == space.project_id,
                or_(FileEntry.path == path, _inside(FileEntry.path, path)),
            )
        )
        _book(session, space.project_id, -freed, None)
    storage.delete(keys)  # after the commit: a crash in between leaves only unreferenced objects
    return sum(1 for r in rows if r.kind == FILE)


# ------------------------------------------------------------------------------------- jobs and files


def resolve_input(session: Session, space: Space, raw: str, loc: list[str | int]) -> FileEntry:
    """A job input: a file or folder of the space, or InvalidInput at ``loc``."""
    path = clean(raw, loc)
    row = _row(session, space, path)
    if row is None:
        raise InvalidInput.field(loc, f"you have no file or folder '{path}'")
    return row


def input_entries(session: Session, entry: FileEntry) -> list[tuple[str, FileEntry]]:
    """(path relative to the folder holding the input, file) of every file an input brings."""
    if entry.kind == FILE:
        return [(entry.name, entry)]
    start = len(entry.parent) + 1 if entry.parent else 0
    space = Space(entry.project_id, entry.owner_id)
    return [(r.path[start:], r) for r in files_under(session, space, entry.path)]


def input_files(session: Session, entry: FileEntry) -> list[tuple[str, str]]:
    """(relative path, object key) of every file an input brings."""
    return [(rel, row.blob_key or "") for rel, row in input_entries(session, entry)]


def job_space(job: Job) -> Space:
    """Where a job's outputs go: its project's space, written as its owner's."""
    return Space(job.project_id, job.owner_id)


def job_outputs_folder(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}"


def job_outputs(session: Session, project_id: uuid.UUID, job_id: uuid.UUID) -> list[FileEntry]:
    """The output files of a job still in its project's space (members may have moved or deleted some)."""
    stmt = select(FileEntry).where(
        FileEntry.project_id == project_id,
        FileEntry.job_id == job_id,
        FileEntry.kind == FILE,
        _inside(FileEntry.path, job_outputs_folder(job_id)),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def count_outputs(session: Session, project_id: uuid.UUID, job_id: uuid.UUID) -> int:
    return len(job_outputs(session, project_id, job_id))


def index_outputs(
    session: Session,
    settings: Settings,
    space: Space,
    job_id: uuid.UUID,
    stored: list[tuple[Upload, str]],
) -> list[str]:
    """Index a job's outputs, already in the store as (upload, key), in the caller's transaction; the keys
    of the objects they replace (to delete once it commits). Outputs count towards the project's storage
    but are never refused for lack of room: a finished result is not thrown away."""
    uploads = [item for item, _ in stored]
    _, replaced = index_objects(
        session, settings, space, uploads, [k for _, k in stored], job_id=job_id, enforce=False
    )
    return replaced


def output_path(job_id: uuid.UUID, rel: str) -> str:
    """Where an output of a job goes in its project's space; InvalidInput for a name no path may have."""
    return clean(f"{job_outputs_folder(job_id)}/{rel}", ["output"])
