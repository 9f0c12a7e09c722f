"""File spaces: an index of paths in the database over immutable objects in the store.

Every project has a space (:class:`Space`); a user's own files are in their personal project's. Listing,
renaming and moving a folder change rows only, and the project's storage use is booked in the same
transaction as the rows (so it is always known). Which space a path a user gives names, and whether they
may use it, is :mod:`labcloud.services.spaces`. This module is the index: paths, listings, moves,
deletes, and the objects a publish or a job's outputs bring. A job's inputs and outputs are
:mod:`labcloud.services.job_files`, storage limits :mod:`labcloud.services.storage_limits`. Receiving
bytes and putting them into the store is :mod:`labcloud.services.file_store`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, JobInput
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, NotFound
from labcloud.services import audit
from labcloud.services.storage_limits import book, usage
from labcloud.settings import Settings
from labcloud.storage.base import Storage
from labcloud.storage.paths import clean_path

MAX_PATH_BYTES = 1024


MAX_NAME_BYTES = 255


FOLDER, FILE = "folder", "file"


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


def inside_folder(column: InstrumentedAttribute[str], path: str) -> ColumnElement[bool]:
    low, high = _below(path)
    return and_(column >= low, column < high)


# ------------------------------------------------------------------------------------------------ reads


def entry_at(session: Session, space: Space, path: str) -> FileEntry | None:
    return session.scalar(
        select(FileEntry).where(FileEntry.project_id == space.project_id, FileEntry.path == path)
    )


def get(session: Session, space: Space, raw_path: str, loc: list[str | int]) -> FileEntry:
    """The file or folder at ``raw_path``; NotFound (also for another user's path)."""
    path = clean(raw_path, loc)
    row = entry_at(session, space, path)
    if row is None:
        raise NotFound(f"You have no file or folder '{path}'.")
    return row


def files_under(session: Session, space: Space, folder: str) -> list[FileEntry]:
    """Every file inside ``folder`` (any depth), by path."""
    stmt = select(FileEntry).where(
        FileEntry.project_id == space.project_id,
        FileEntry.kind == FILE,
        inside_folder(FileEntry.path, folder),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def list_paths(session: Session, space: Space, kind: str, limit: int) -> list[str]:
    """Paths of the user's files (or folders) by path, job outputs (``jobs/...``) after the user's own."""
    base = select(FileEntry.path).where(FileEntry.project_id == space.project_id, FileEntry.kind == kind)
    in_jobs = or_(FileEntry.path == "jobs", inside_folder(FileEntry.path, "jobs"))
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
        row = entry_at(session, space, parent)
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


def size_at(session: Session, space: Space, path: str | None) -> int:
    """The bytes of the file at ``path`` (0: nothing there, or a folder), which a new file there frees."""
    row = entry_at(session, space, path) if path is not None else None
    return row.size if row is not None and row.kind == FILE else 0


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
        row = entry_at(session, space, item.path)
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
    book(session, space.project_id, delta, usage(session, settings, space.project_id)[1] if enforce else None)
    return [Entry.of(r) for r in rows], replaced


def _folder_row(space: Space, path: str, now: datetime) -> FileEntry:
    parent, name = _split(path)
    return FileEntry(
        project_id=space.project_id,
        owner_id=space.user_id,
        path=path,
        parent=parent,
        name=name,
        kind=FOLDER,
        created_at=now,
        modified_at=now,
    )


def _ensure_folders(session: Session, space: Space, path: str, now: datetime) -> None:
    for folder in _ancestors(path):
        row = entry_at(session, space, folder)
        if row is None:
            session.add(_folder_row(space, folder, now))
            session.flush()
        else:
            row.modified_at = now


def make_folder(db: Database, space: Space, raw_path: str, loc: list[str | int]) -> Entry:
    """A new, empty folder (and the folders above it that are missing); Conflict when the name is taken."""
    path = clean(raw_path, loc)
    with db.session() as session:
        found = entry_at(session, space, path)
        if found is not None:
            what = "a folder" if found.kind == FOLDER else "a file"
            raise Conflict(f"'{path}' already exists as {what}.")
        _check_target(session, space, path, loc)
        now = utcnow()
        _ensure_folders(session, space, path, now)
        row = _folder_row(space, path, now)
        session.add(row)
        session.flush()
        return Entry.of(row)


# ------------------------------------------------------------------------------------- moves, deletes


def move(db: Database, space: Space, raw_from: str, raw_to: str) -> Entry:
    """Rename a file or folder (with everything in it). The destination must not exist."""
    src = clean(raw_from, ["body", "from"])
    dst = clean(raw_to, ["body", "to"])
    if dst == src or dst.startswith(src + "/"):
        raise InvalidInput.field(["body", "to"], "a folder cannot be moved into itself")
    with db.session() as session:
        row = entry_at(session, space, src)
        if row is None:
            raise NotFound(f"You have no file or folder '{src}'.")
        if entry_at(session, space, dst) is not None:
            raise Conflict(f"'{dst}' already exists; delete it first or pick another name.")
        _check_target(session, space, dst, ["body", "to"])
        now = utcnow()
        _ensure_folders(session, space, dst, now)
        moved = [row]
        if row.kind == FOLDER:
            moved += session.scalars(
                select(FileEntry).where(
                    FileEntry.project_id == space.project_id, inside_folder(FileEntry.path, src)
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
        row = entry_at(session, space, path)
        if row is None:
            raise NotFound(f"You have no file or folder '{path}'.")
        rows = [row] + (files_under(session, space, path) if row.kind == FOLDER else [])
        keys = [r.blob_key for r in rows if r.blob_key]
        freed = sum(r.size for r in rows if r.kind == FILE)
        session.execute(
            delete(FileEntry).where(
                FileEntry.project_id == space.project_id,
                or_(FileEntry.path == path, inside_folder(FileEntry.path, path)),
            )
        )
        book(session, space.project_id, -freed, None)
        details = {"project_id": space.project_id, "path": path, "files": len(keys), "bytes": freed}
        audit.record(session, "file.deleted", "file", f"{space.project_id}:{path}", details)
    release(db, storage, keys)  # after the commit: a crash in between leaves only unreferenced objects
    return sum(1 for r in rows if r.kind == FILE)


def release(db: Database, storage: Storage, keys: list[str]) -> None:
    """Remove the objects of files deleted or replaced, once that is committed, except those a job holds
    as the content of its inputs (:class:`JobInput`: kept while the job exists, swept after).

    A submit reads its inputs' rows with a share lock (PostgreSQL), so the delete or replacement that let an
    object go waited for that submit's commit, and its hold is seen here."""
    if keys:
        storage.delete([k for k in keys if k not in held_keys(db, keys)])


def held_keys(db: Database, keys: list[str]) -> set[str]:
    """Which of ``keys`` a job holds as an input's content."""
    held: set[str] = set()
    with db.session() as session:
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            held.update(session.scalars(select(JobInput.blob_key).where(JobInput.blob_key.in_(batch))))
    return held
