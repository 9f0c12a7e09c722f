"""The store side of a file space: bytes in, objects out.

An upload is received into a private temporary file, checksummed on the way (:func:`receive`), with its
room checked up front and as the bytes arrive (:func:`check_room`, :func:`room_left`). Only a complete one
is published (:func:`publish`): the object goes into the store first, then one transaction indexes it and
books its size against its project's storage limit (:func:`labcloud.services.files.index_objects`). A crash
before that transaction leaves an object no row refers to, swept later (:func:`sweep_orphans`), never a
row pointing at a partial object.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Event, FileEntry, Project
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput
from labcloud.services import files, storage_limits
from labcloud.services.storage_limits import TooLarge
from labcloud.services.write_behind import WriteBehind
from labcloud.settings import Settings
from labcloud.storage.base import Storage
from labcloud.telemetry import metrics

UPLOADED_EVENT = "file.uploaded"  # a file published into a space (not a job's output)

WRITE_BUFFER = 1 << 20
SYNC_EVERY = 64 << 20


# ------------------------------------------------------------------------------------------ admission


def check_room(
    db: Database, settings: Settings, space: files.Space, length: int, path: str | None = None
) -> None:
    """Refuse up front (413, saying how much room is left) an upload of ``length`` bytes that won't fit."""
    if length > settings.max_upload_bytes:
        raise TooLarge(
            f"The file is {length} bytes; the largest one upload may store is {settings.max_upload_bytes}."
        )
    room, limit = _room(db, settings, space, path)
    if room is not None and limit is not None and length > room:
        raise TooLarge(storage_limits.no_room(length, room, limit))


def room_left(db: Database, settings: Settings, space: files.Space, path: str | None = None) -> int | None:
    """Bytes an upload to ``path`` may bring (the file it replaces counts as free); None: no limit."""
    return _room(db, settings, space, path)[0]


def _room(
    db: Database, settings: Settings, space: files.Space, path: str | None
) -> tuple[int | None, int | None]:
    with db.session() as session:
        return storage_limits.room(session, settings, space.project_id, files.size_at(session, space, path))


# ------------------------------------------------------------------------------------------ receiving


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

    writes = WriteBehind()  # the next MiB arrives while the last one is hashed and written
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
                await writes.put(flush, full)
        await writes.drain()
        await run_in_threadpool(flush, pending)
        await run_in_threadpool(_finish, fh)
        if length is not None and size != length:
            raise InvalidInput.field(["header", "content-length"], f"got {size} bytes of {length} announced")
    except BaseException:
        try:
            await writes.settle()
        finally:
            fh.close()
            tmp.unlink(missing_ok=True)
        raise
    return tmp, size, digest.hexdigest()


def _finish(fh: object) -> None:
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]
    fh.close()  # type: ignore[attr-defined]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------ publishing


def publish(
    db: Database,
    storage: Storage,
    settings: Settings,
    space: files.Space,
    path: str,
    source: Path,
    size: int,
    sha256: str,
) -> files.Entry:
    """Store the complete local file ``source`` (consumed) and index it at ``path``, replacing a file."""
    return publish_many(db, storage, settings, space, [files.Upload(path, source, size, sha256)])[0]


def publish_many(
    db: Database,
    storage: Storage,
    settings: Settings,
    space: files.Space,
    uploads: list[files.Upload],
    *,
    job_id: uuid.UUID | None = None,
    enforce_limit: bool = True,
) -> list[files.Entry]:
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
        db, storage, settings, space, uploads, keys, job_id=job_id, enforce_limit=enforce_limit
    )


def index_stored(
    db: Database,
    storage: Storage,
    settings: Settings,
    space: files.Space,
    uploads: list[files.Upload],
    keys: list[str],
    *,
    job_id: uuid.UUID | None = None,
    enforce_limit: bool = True,
) -> list[files.Entry]:
    """Index objects already in the store; if that is refused, the objects are removed."""
    try:
        for attempt in range(3):
            try:
                with db.session() as session:
                    entries, replaced = files.index_objects(
                        session, settings, space, uploads, keys, job_id=job_id, enforce=enforce_limit
                    )
                    if job_id is None:  # (a job's outputs are told by the job's own events)
                        _emit_uploaded(session, space, entries)
                break
            except IntegrityError:  # a concurrent upload created the same path or folder: once more
                if attempt == 2:
                    raise
    except BaseException:
        storage.delete(keys)
        raise
    files.release(db, storage, replaced)
    if job_id is None:  # a user's upload (a job's outputs are not)
        metrics.uploaded([e.size for e in entries if e.type == "file"])
    return entries


def _emit_uploaded(session: Session, space: files.Space, entries: list[files.Entry]) -> None:
    """A ``file.uploaded`` event for each file published into the space, in the indexing transaction."""
    slug = session.scalar(select(Project.slug).where(Project.id == space.project_id))
    for entry in entries:
        if entry.type != "file":
            continue
        session.add(
            Event(
                kind=UPLOADED_EVENT,
                user_id=space.user_id,
                project_id=space.project_id,
                payload={
                    "file": {
                        "project": slug,
                        "user": str(space.user_id),
                        "path": entry.path,
                        "size": entry.size,
                        "sha256": entry.sha256,
                    }
                },
                fanned_out=False,
            )
        )


# ------------------------------------------------------------------------------------------ sweeping


def sweep_orphans(db: Database, storage: Storage, older_than: timedelta = timedelta(hours=1)) -> int:
    """Remove objects no file refers to and no job holds as an input's content: left by a crash between
    storing and indexing, or held by jobs since deleted."""
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


def drop_unreferenced(db: Database, storage: Storage, keys: list[str]) -> int:
    """Remove those of ``keys`` that no file refers to and no job holds (rows deleted and committed)."""
    removed = 0
    for start in range(0, len(keys), 500):
        removed += _drop_unreferenced(db, storage, keys[start : start + 500])
    return removed


def _drop_unreferenced(db: Database, storage: Storage, keys: list[str]) -> int:
    with db.session() as session:
        known = set(session.scalars(select(FileEntry.blob_key).where(FileEntry.blob_key.in_(keys))))
    known |= files.held_keys(db, keys)  # a job's inputs' content: kept while the job exists
    orphans = [k for k in keys if k not in known]
    storage.delete(orphans)
    return len(orphans)
