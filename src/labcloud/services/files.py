"""Each user's file space: an index of paths in the database over immutable objects in the store.

Uploads are written to a private temporary file, checksummed on the way, and published only when whole:
the object goes into the store first, then one transaction indexes it and books its size against the
user's storage limit. A crash before that transaction leaves an object no row refers to (swept later),
never a row pointing at a partial object. Renames and folder moves change rows only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, LabcloudError, NotFound
from labcloud.settings import Settings
from labcloud.storage.base import Storage
from labcloud.storage.paths import clean_path

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
WRITE_BUFFER = 1 << 20
SYNC_EVERY = 64 << 20
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

    @classmethod
    def of(cls, row: FileEntry) -> Entry:
        return cls(row.path, row.kind, row.size, row.modified_at, row.sha256, row.job_id)


@dataclass
class Upload:
    """One object to publish: a complete local file, its size and checksum, and where it goes."""

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


def _row(session: Session, owner_id: uuid.UUID, path: str) -> FileEntry | None:
    return session.scalar(select(FileEntry).where(FileEntry.owner_id == owner_id, FileEntry.path == path))


def get(session: Session, owner_id: uuid.UUID, raw_path: str, loc: list[str | int]) -> FileEntry:
    """The file or folder at ``raw_path``; NotFound (also for another user's path)."""
    path = clean(raw_path, loc)
    row = _row(session, owner_id, path)
    if row is None:
        raise NotFound(f"You have no file or folder '{path}'.")
    return row


def files_under(session: Session, owner_id: uuid.UUID, folder: str) -> list[FileEntry]:
    """Every file inside ``folder`` (any depth), by path."""
    stmt = select(FileEntry).where(
        FileEntry.owner_id == owner_id,
        FileEntry.kind == FILE,
        _inside(FileEntry.path, folder),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def list_paths(session: Session, owner_id: uuid.UUID, kind: str, limit: int) -> list[str]:
    """Paths of the user's files (or folders) by path, job outputs (``jobs/...``) after the user's own."""
    base = select(FileEntry.path).where(FileEntry.owner_id == owner_id, FileEntry.kind == kind)
    in_jobs = or_(FileEntry.path == "jobs", _inside(FileEntry.path, "jobs"))
    paths = list(session.scalars(base.where(~in_jobs).order_by(FileEntry.path).limit(limit)))
    if len(paths) < limit:
        paths += session.scalars(base.where(in_jobs).order_by(FileEntry.path).limit(limit - len(paths)))
    return paths


def list_folder(
    session: Session, owner_id: uuid.UUID, prefix: str, *, limit: int, cursor: str | None
) -> tuple[list[Entry], str | None]:
    """One page of a folder's entries by name. A prefix naming a file lists that file."""
    parent = "" if not prefix.strip().strip("/") else clean(prefix, ["query", "prefix"])
    if parent:
        row = _row(session, owner_id, parent)
        if row is None:
            raise NotFound(f"You have no folder '{parent}'.")
        if row.kind == FILE:
            return [Entry.of(row)], None
    stmt = select(FileEntry).where(FileEntry.owner_id == owner_id, FileEntry.parent == parent)
    if cursor:
        stmt = stmt.where(FileEntry.name > _decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(FileEntry.name).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = base64.urlsafe_b64encode(rows[-1].name.encode()).decode() if more and rows else None
    return [Entry.of(r) for r in rows], next_cursor


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput.field(["query", "cursor"], "cursor is not one this server gave out") from None


def usage(session: Session, settings: Settings, owner_id: uuid.UUID) -> tuple[int, int | None]:
    """Bytes used and the user's limit (None: no limit)."""
    user = session.get(User, owner_id)
    if user is None:
        raise NotFound("No such user.")
    return user.storage_used_bytes, _limit(settings, user)


def _limit(settings: Settings, user: User) -> int | None:
    limit = user.storage_limit_bytes if user.storage_limit_bytes is not None else settings.storage_quota_bytes
    return limit or None


# ------------------------------------------------------------------------------------------ admission


def check_room(
    db: Database, settings: Settings, owner_id: uuid.UUID, length: int, path: str | None = None
) -> None:
    """Refuse up front (413, saying how much room is left) an upload of ``length`` bytes that won't fit."""
    if length > settings.max_upload_bytes:
        raise TooLarge(
            f"The file is {length} bytes; the largest one upload may store is {settings.max_upload_bytes}."
        )
    room, limit = _room(db, settings, owner_id, path)
    if room is not None and limit is not None and length > room:
        raise TooLarge(_no_room(length, room, limit))


def room_left(db: Database, settings: Settings, owner_id: uuid.UUID, path: str | None = None) -> int | None:
    """Bytes an upload to ``path`` may bring (the file it replaces counts as free); None: no limit."""
    return _room(db, settings, owner_id, path)[0]


def _room(
    db: Database, settings: Settings, owner_id: uuid.UUID, path: str | None
) -> tuple[int | None, int | None]:
    with db.session() as session:
        used, limit = usage(session, settings, owner_id)
        if limit is None:
            return None, None
        replaced = 0
        if path is not None and (row := _row(session, owner_id, path)) is not None and row.kind == FILE:
            replaced = row.size
    return max(limit - used + replaced, 0), limit


def _no_room(length: int, room: int, limit: int) -> str:
    return (
        f"The file is {length} bytes but only {max(room, 0)} bytes are left of your storage limit of "
        f"{limit} bytes; delete files or ask an administrator for more room."
    )


def check_target(db: Database, owner_id: uuid.UUID, path: str, loc: list[str | int]) -> None:
    """Refuse a destination that is a folder or lies inside a file."""
    with db.session() as session:
        _check_target(session, owner_id, path, loc)


def _check_target(session: Session, owner_id: uuid.UUID, path: str, loc: list[str | int]) -> None:
    wanted = [*_ancestors(path), path]
    rows = session.scalars(
        select(FileEntry).where(FileEntry.owner_id == owner_id, FileEntry.path.in_(wanted))
    ).all()
    for row in rows:
        if row.path == path and row.kind == FOLDER:
            raise InvalidInput.field(loc, f"'{path}' is a folder")
        if row.path != path and row.kind == FILE:
            raise InvalidInput.field(loc, f"'{row.path}' is a file, so it cannot hold '{path}'")


# ------------------------------------------------------------------------------------------ publishing


def publish(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    path: str,
    source: Path,
    size: int,
    sha256: str,
) -> Entry:
    """Store the complete local file ``source`` (consumed) and index it at ``path``, replacing a file."""
    return publish_many(db, storage, settings, owner_id, [Upload(path, source, size, sha256)])[0]


def publish_many(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    uploads: list[Upload],
    *,
    job_id: uuid.UUID | None = None,
    enforce_limit: bool = True,
) -> list[Entry]:
    """Store every upload, then index them all in one transaction (all or none become visible)."""
    keys: list[str] = []
    try:
        for item in uploads:
            key = storage.new_key()
            storage.put_file(key, item.source)  # never inside a transaction
            keys.append(key)
    except BaseException:
        storage.delete(keys)
        for item in uploads:
            item.source.unlink(missing_ok=True)
        raise
    return index_stored(
        db, storage, settings, owner_id, uploads, keys, job_id=job_id, enforce_limit=enforce_limit
    )


def index_stored(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    uploads: list[Upload],
    keys: list[str],
    *,
    job_id: uuid.UUID | None = None,
    enforce_limit: bool = True,
) -> list[Entry]:
    """Index objects already in the store; if that is refused, the objects are removed."""
    try:
        for attempt in range(3):
            try:
                with db.session() as session:
                    entries, replaced = _index(
                        session, settings, owner_id, uploads, keys, job_id=job_id, enforce=enforce_limit
                    )
                break
            except IntegrityError:  # a concurrent upload created the same path or folder: once more
                if attempt == 2:
                    raise
    except BaseException:
        storage.delete(keys)
        raise
    storage.delete(replaced)
    return entries


def _index(
    session: Session,
    settings: Settings,
    owner_id: uuid.UUID,
    uploads: list[Upload],
    keys: list[str],
    *,
    job_id: uuid.UUID | None,
    enforce: bool,
) -> tuple[list[Entry], list[str]]:
    now = utcnow()
    delta = 0
    replaced: list[str] = []
    rows: list[FileEntry] = []
    for item, key in zip(uploads, keys, strict=True):
        _check_target(session, owner_id, item.path, ["path"])
        _ensure_folders(session, owner_id, item.path, now)
        row = _row(session, owner_id, item.path)
        if row is None:
            parent, name = _split(item.path)
            row = FileEntry(owner_id=owner_id, path=item.path, parent=parent, name=name, kind=FILE)
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
    _book(session, owner_id, delta, _limit_of(session, settings, owner_id) if enforce else None)
    return [Entry.of(r) for r in rows], replaced


def _ensure_folders(session: Session, owner_id: uuid.UUID, path: str, now: datetime) -> None:
    for folder in _ancestors(path):
        row = _row(session, owner_id, folder)
        if row is None:
            parent, name = _split(folder)
            session.add(
                FileEntry(
                    owner_id=owner_id,
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


def _limit_of(session: Session, settings: Settings, owner_id: uuid.UUID) -> int | None:
    return usage(session, settings, owner_id)[1]


def _book(session: Session, owner_id: uuid.UUID, delta: int, limit: int | None) -> None:
    """Add ``delta`` bytes to the user's use; given a ``limit``, only if the use stays within it.

    One conditional UPDATE, so concurrent uploads can't together pass the limit.
    """
    stmt = update(User).where(User.id == owner_id)
    if delta > 0 and limit is not None:
        stmt = stmt.where(User.storage_used_bytes + delta <= limit)
    result = session.execute(
        stmt.values(storage_used_bytes=User.storage_used_bytes + delta),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        used = session.scalar(select(User.storage_used_bytes).where(User.id == owner_id))
        if used is None:
            raise NotFound("No such user.")
        assert limit is not None
        raise TooLarge(_no_room(delta, limit - used, limit))


async def receive(
    settings: Settings, body: AsyncIterator[bytes], length: int | None, room: int | None
) -> tuple[Path, int, str]:
    """Stream a request body into a private temporary file; its path, size and SHA-256.

    Stops as soon as the body passes the largest upload or the room left (nothing is kept).
    """
    limit = settings.max_upload_bytes if room is None else min(room, settings.max_upload_bytes)
    staging = settings.uploads_dir / "put"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()
    unsynced = 0
    fh = await run_in_threadpool(open, tmp, "wb")

    def flush(data: bytearray) -> None:  # hashing and writing off the event loop, a MiB at a time
        nonlocal unsynced
        digest.update(data)
        fh.write(data)
        unsynced += len(data)
        if unsynced >= SYNC_EVERY:  # keep the disk busy while bytes arrive, not all at the end
            fh.flush()
            os.fdatasync(fh.fileno())
            unsynced = 0

    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise TooLarge(
                    f"The upload passed {limit} bytes, the most this upload may store; nothing was stored."
                )
            pending += chunk
            if len(pending) >= WRITE_BUFFER:
                full, pending = pending, bytearray()
                await run_in_threadpool(flush, full)
        await run_in_threadpool(flush, pending)
        await run_in_threadpool(_finish, fh)
        if length is not None and size != length:
            raise InvalidInput.field(["header", "content-length"], f"got {size} bytes of {length} announced")
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
    return tmp, size, digest.hexdigest()


def _finish(fh: object) -> None:
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]
    fh.close()  # type: ignore[attr-defined]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- moves, deletes


def move(db: Database, owner_id: uuid.UUID, raw_from: str, raw_to: str) -> Entry:
    """Rename a file or folder (with everything in it). The destination must not exist."""
    src = clean(raw_from, ["body", "from"])
    dst = clean(raw_to, ["body", "to"])
    if dst == src or dst.startswith(src + "/"):
        raise InvalidInput.field(["body", "to"], "a folder cannot be moved into itself")
    with db.session() as session:
        row = _row(session, owner_id, src)
        if row is None:
            raise NotFound(f"You have no file or folder '{src}'.")
        if _row(session, owner_id, dst) is not None:
            raise Conflict(f"'{dst}' already exists; delete it first or pick another name.")
        _check_target(session, owner_id, dst, ["body", "to"])
        now = utcnow()
        _ensure_folders(session, owner_id, dst, now)
        moved = [row]
        if row.kind == FOLDER:
            moved += session.scalars(
                select(FileEntry).where(FileEntry.owner_id == owner_id, _inside(FileEntry.path, src))
            ).all()
        for item in moved:
            item.path = dst + item.path[len(src) :]
            item.parent, item.name = _split(item.path)
        row.modified_at = now
        session.flush()
        return Entry.of(row)


def delete_path(db: Database, storage: Storage, owner_id: uuid.UUID, raw_path: str) -> int:
    """Delete a file, or a folder with everything in it; returns the number of files removed."""
    path = clean(raw_path, ["path", "path"])
    with db.session() as session:
        row = _row(session, owner_id, path)
        if row is None:
            raise NotFound(f"You have no file or folder '{path}'.")
        rows = [row] + (files_under(session, owner_id, path) if row.kind == FOLDER else [])
        keys = [r.blob_key for r in rows if r.blob_key]
        freed = sum(r.size for r in rows if r.kind == FILE)
        session.execute(
            delete(FileEntry).where(
                FileEntry.owner_id == owner_id,
                or_(FileEntry.path == path, _inside(FileEntry.path, path)),
            )
        )
        _book(session, owner_id, -freed, None)
    storage.delete(keys)  # after the commit: a crash in between leaves only unreferenced objects
    return sum(1 for r in rows if r.kind == FILE)


def sweep_orphans(db: Database, storage: Storage, older_than: timedelta = timedelta(hours=1)) -> int:
    """Remove objects no file refers to (left by a crash between storing and indexing)."""
    removed = 0
    batch: list[str] = []
    for key in storage.iter_keys(utcnow() - older_than):
        batch.append(key)
        if len(batch) >= 500:
            removed += _drop_unreferenced(db, storage, batch)
            batch = []
    if batch:
        removed += _drop_unreferenced(db, storage, batch)
    return removed


def _drop_unreferenced(db: Database, storage: Storage, keys: list[str]) -> int:
    with db.session() as session:
        known = set(session.scalars(select(FileEntry.blob_key).where(FileEntry.blob_key.in_(keys))))
    orphans = [k for k in keys if k not in known]
    storage.delete(orphans)
    return len(orphans)


def recount(db: Database, owner_id: uuid.UUID) -> int:
    """Set the user's booked use to the sum of their files (repairs drift after manual changes)."""
    with db.session() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(FileEntry.size), 0)).where(
                FileEntry.owner_id == owner_id, FileEntry.kind == FILE
            )
        )
        session.execute(update(User).where(User.id == owner_id).values(storage_used_bytes=int(total or 0)))
    return int(total or 0)


# ------------------------------------------------------------------------------------- jobs and files


def resolve_input(session: Session, owner_id: uuid.UUID, raw: str, loc: list[str | int]) -> FileEntry:
    """A job input: a file or folder of the user's space, or InvalidInput at ``loc``."""
    path = clean(raw, loc)
    row = _row(session, owner_id, path)
    if row is None:
        raise InvalidInput.field(loc, f"you have no file or folder '{path}'")
    return row


def input_entries(session: Session, owner_id: uuid.UUID, entry: FileEntry) -> list[tuple[str, FileEntry]]:
    """(path relative to the folder holding the input, file) of every file an input brings."""
    if entry.kind == FILE:
        return [(entry.name, entry)]
    start = len(entry.parent) + 1 if entry.parent else 0
    return [(r.path[start:], r) for r in files_under(session, owner_id, entry.path)]


def input_files(session: Session, owner_id: uuid.UUID, entry: FileEntry) -> list[tuple[str, str]]:
    """(relative path, object key) of every file an input brings."""
    return [(rel, row.blob_key or "") for rel, row in input_entries(session, owner_id, entry)]


def job_outputs_folder(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}"


def job_outputs(session: Session, owner_id: uuid.UUID, job_id: uuid.UUID) -> list[FileEntry]:
    """The output files of a job still in its owner's space (the user may have moved or deleted some)."""
    stmt = select(FileEntry).where(
        FileEntry.owner_id == owner_id,
        FileEntry.job_id == job_id,
        FileEntry.kind == FILE,
        _inside(FileEntry.path, job_outputs_folder(job_id)),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def count_outputs(session: Session, owner_id: uuid.UUID, job_id: uuid.UUID) -> int:
    return len(job_outputs(session, owner_id, job_id))


def index_outputs(
    session: Session,
    settings: Settings,
    owner_id: uuid.UUID,
    job_id: uuid.UUID,
    stored: list[tuple[Upload, str]],
) -> list[str]:
    """Index a job's outputs, already in the store as (upload, key), in the caller's transaction; the keys
    of the objects they replace (to delete once it commits). Outputs count towards the owner's storage but
    are never refused for lack of room: a finished result is not thrown away."""
    uploads = [item for item, _ in stored]
    _, replaced = _index(
        session, settings, owner_id, uploads, [k for _, k in stored], job_id=job_id, enforce=False
    )
    return replaced


def output_path(job_id: uuid.UUID, rel: str) -> str:
    """Where an output of a job goes in its owner's space; InvalidInput for a name no path may have."""
    return clean(f"{job_outputs_folder(job_id)}/{rel}", ["output"])
