"""Resumable uploads (tus 1.0.0): the bytes collect in a partial file, then are published whole.

An upload is a row of ``uploads`` (owner, destination path, length, acknowledged offset, expiry) and a
partial file ``uploads_dir/tus/<id>`` (:mod:`labcloud.services.partial_files`). A PATCH appends to the
partial file as the body arrives and, once the bytes are on disk (fsync), records the new offset in the
row. So:

* the row's offset never exceeds what is durably in the file, and the file may hold more than the row
  says (a PATCH in flight, or a server killed before it recorded its offset). The offset a client is told
  is the smaller of the two, and a PATCH first cuts the file back to it: a resumed client never leaves
  unacknowledged bytes in the middle of its file.
* a client whose connection drops keeps what arrived (the server writes it, fsyncs and records it);
  a chunk sent with ``Upload-Checksum`` is all or nothing, since a partial one cannot be verified.
* one PATCH at a time per upload: an exclusive ``flock`` on the partial file (it also keeps termination
  and expiry away from a PATCH in flight). A second one is refused with 409.

The SHA-256 of the whole file is computed on the way: a hash object per upload, kept in this process with
the offset it has reached. After a restart (or on another replica) the partial file is hashed once, at
completion. Complete uploads are handed to :func:`labcloud.services.file_store.publish` and their row removed.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select

from labcloud.db.engine import Database
from labcloud.db.models import Upload
from labcloud.db.types import new_id, utcnow
from labcloud.errors import Conflict, LabcloudError, NotFound
from labcloud.services import file_store, files, maintenance, partial_files, spaces, storage_limits
from labcloud.settings import Settings
from labcloud.storage.base import Storage

CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
}


# ------------------------------------------------------------------------------------------------ errors


class OffsetMismatch(Conflict):
    type_slug = "upload-offset-mismatch"

    def __init__(self, detail: str, offset: int) -> None:
        super().__init__(detail)
        self.offset = offset  # where the upload is


class UploadGone(LabcloudError):
    status, title, type_slug = 410, "Gone", "upload-expired"


class ChecksumMismatch(LabcloudError):
    status, title, type_slug = 460, "Checksum mismatch", "checksum-mismatch"


class BodyInterrupted(LabcloudError):
    """The request body ended early (the connection dropped); what arrived before that is kept."""

    status, title, type_slug = 400, "Bad request", "body-interrupted"


@dataclass(frozen=True)
class Checksum:
    """What a chunk's bytes must hash to: one of :data:`CHECKSUMS`, and the digest."""

    algorithm: str
    digest: bytes


# ------------------------------------------------------------------------------------------------ state


@dataclass
class UploadInfo:
    id: uuid.UUID
    project_id: uuid.UUID  # the space it goes into
    path: str  # in that space
    length: int
    offset: int
    meta: dict[str, str]
    expires_at: datetime


@dataclass
class Written:
    """What a PATCH achieved: the new offset, and the published file once the upload is complete."""

    offset: int
    expires_at: datetime | None
    entry: files.Entry | None = None


def _info(row: Upload, offset: int) -> UploadInfo:
    return UploadInfo(
        row.id, row.project_id, row.path, row.length, offset, dict(row.meta or {}), row.expires_at
    )


def _get(db: Database, owner_id: uuid.UUID, upload_id: uuid.UUID, now: datetime | None = None) -> UploadInfo:
    """The upload as recorded; 404 for an unknown one or another user's, 410 once expired."""
    with db.session() as session:
        row = session.scalar(select(Upload).where(Upload.id == upload_id, Upload.owner_id == owner_id))
        if row is None:
            raise NotFound(f"You have no upload {upload_id}.")
        info = _info(row, row.offset)
    if info.expires_at <= (now or utcnow()):
        raise UploadGone(f"The upload {upload_id} expired at {info.expires_at.isoformat()}; start again.")
    return info


# ------------------------------------------------------------------------------------------------ creation


def create(
    db: Database,
    settings: Settings,
    space: files.Space,
    raw_path: str,
    loc: list[str | int],
    length: int,
    meta: dict[str, str],
) -> UploadInfo:
    """Check the destination ``raw_path`` in the space (named at ``loc``) and the room, then start;
    ``meta`` is kept as the client gave it. Refused (503) in maintenance."""
    maintenance.refuse_new_work(db.engine)
    path = files.clean(raw_path, loc)
    files.check_target(db, space, path, loc)
    file_store.check_room(db, settings, space, length, path)
    upload_id = new_id()
    part = partial_files.create(settings, upload_id)
    try:
        now = utcnow()
        row = Upload(
            id=upload_id,
            owner_id=space.user_id,
            project_id=space.project_id,
            path=path,
            length=length,
            offset=0,
            meta=meta,
            created_at=now,
            expires_at=now + timedelta(hours=settings.upload_expiry_hours),
        )
        with db.session() as session:
            session.add(row)
            session.flush()
            info = _info(row, 0)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return info


# ------------------------------------------------------------------------------------------------ reads


def describe(db: Database, settings: Settings, owner_id: uuid.UUID, upload_id: uuid.UUID) -> UploadInfo:
    """The upload with the offset a client may resume from: the recorded offset, or less if the partial
    file holds less (bytes beyond the recorded offset are not acknowledged yet)."""
    info = _get(db, owner_id, upload_id)
    try:
        size = partial_files.partial_path(settings, upload_id).stat().st_size
    except FileNotFoundError:
        raise NotFound(f"The bytes of upload {upload_id} are gone; start again.") from None
    info.offset = min(info.offset, size)
    return info


# ------------------------------------------------------------------------------------------------ writes


def _record(db: Database, settings: Settings, upload_id: uuid.UUID, offset: int, part: Path) -> datetime:
    """Store the durable offset and push the expiry back; NotFound if the upload was removed meanwhile."""
    with db.session() as session:
        row = session.get(Upload, upload_id)
        if row is None:
            part.unlink(missing_ok=True)
            raise NotFound(f"The upload {upload_id} was removed.")
        row.offset = offset
        row.expires_at = utcnow() + timedelta(hours=settings.upload_expiry_hours)
        return row.expires_at


def _forget(db: Database, upload_id: uuid.UUID) -> None:
    partial_files.hashers.forget(upload_id)
    with db.session() as session:
        session.execute(delete(Upload).where(Upload.id == upload_id))


async def write(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    upload_id: uuid.UUID,
    offset: int,
    body: AsyncIterable[bytes],
    *,
    content_length: int | None = None,
    checksum: Checksum | None = None,
) -> Written:
    """Append ``body`` at ``offset`` (which must be the upload's current offset); publish when complete.

    The body is written as it arrives (:func:`partial_files.receive`). The new offset is recorded only
    after an fsync. A body that breaks off keeps its bytes (unless checksummed) and
    raises :class:`BodyInterrupted`.
    """
    info = await run_in_threadpool(_get, db, owner_id, upload_id)
    part = partial_files.partial_path(settings, upload_id)
    fh = await run_in_threadpool(partial_files.lock, part, upload_id)
    try:
        info = await run_in_threadpool(_get, db, owner_id, upload_id)  # as it is now that we hold the lock
        current = min(info.offset, os.fstat(fh.fileno()).st_size)
        if offset != current:
            raise OffsetMismatch(
                f"Upload-Offset is {offset} but the upload is at {current}; continue from there.", current
            )
        if content_length is not None and offset + content_length > info.length:
            raise storage_limits.TooLarge(
                f"{content_length} bytes at offset {offset} would pass the Upload-Length of {info.length}."
            )
        await run_in_threadpool(partial_files.start, fh, offset)
        digest = partial_files.hashers.take(upload_id, offset)
        check = CHECKSUMS[checksum.algorithm]() if checksum else None
        received = await partial_files.receive(fh, body, offset, info.length, digest, check)
        if received is None:  # interrupted and checksummed: nothing of it is kept
            raise BodyInterrupted("The request body ended early; the chunk was discarded.")
        count, interrupted = received
        if check is not None and checksum is not None and check.digest() != checksum.digest:
            await run_in_threadpool(partial_files.discard, fh, offset)
            raise ChecksumMismatch(
                f"The {checksum.algorithm} of the {count} bytes received does not match Upload-Checksum; "
                f"they were discarded and the offset stays {offset}."
            )
        new_offset = offset + count
        if new_offset == info.length:  # complete, even if the connection then dropped
            return await _complete(db, storage, settings, owner_id, info, part, digest)
        expires_at = await run_in_threadpool(_record, db, settings, upload_id, new_offset, part)
        partial_files.hashers.keep(upload_id, new_offset, digest)
        if interrupted:
            raise BodyInterrupted(f"The request body ended early; the upload is at offset {new_offset}.")
        return Written(new_offset, expires_at)
    finally:
        fh.close()  # releases the lock


async def _complete(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    info: UploadInfo,
    part: Path,
    digest: Any | None,
) -> Written:
    """Hash (unless followed all along), publish, and forget the upload. If publishing is refused (the
    storage limit filled up meanwhile, the path became a folder) the upload is dropped too: ``publish``
    has consumed the partial file either way, as it has if the user may no longer write there."""
    space = files.Space(info.project_id, owner_id)
    try:
        await run_in_threadpool(_still_writable, db, space)
        sha256 = (
            digest.hexdigest() if digest is not None else await run_in_threadpool(file_store.sha256_of, part)
        )
        entry = await run_in_threadpool(
            file_store.publish, db, storage, settings, space, info.path, part, info.length, sha256
        )
    except BaseException:
        await run_in_threadpool(_drop, db, part, info.id)
        raise
    await run_in_threadpool(_forget, db, info.id)
    return Written(info.length, None, entry)


def _still_writable(db: Database, space: files.Space) -> None:
    with db.session() as session:
        spaces.writable(session, space.user_id, space.project_id)


def _drop(db: Database, part: Path, upload_id: uuid.UUID) -> None:
    part.unlink(missing_ok=True)
    _forget(db, upload_id)


# ------------------------------------------------------------------------------------------------ removal


def terminate(db: Database, settings: Settings, owner_id: uuid.UUID, upload_id: uuid.UUID) -> None:
    """Remove an upload and its partial file (also an expired one); 409 while a PATCH is writing."""
    with db.session() as session:
        row = session.scalar(select(Upload).where(Upload.id == upload_id, Upload.owner_id == owner_id))
        if row is None:
            raise NotFound(f"You have no upload {upload_id}.")
    part = partial_files.partial_path(settings, upload_id)
    try:
        fh: io.FileIO | None = partial_files.lock(part, upload_id)
    except NotFound:
        fh = None
    try:
        part.unlink(missing_ok=True)
        _forget(db, upload_id)
    finally:
        if fh is not None:
            fh.close()


def expire(db: Database, settings: Settings, now: datetime) -> int:
    """Remove the uploads that expired by ``now`` (rows and partial files); how many. An upload being
    written right now is left alone (its PATCH pushes the expiry back). Partial files without a row,
    older than the expiry period (a crash between creating the file and its row), go too."""
    with db.session() as session:
        stale = list(session.scalars(select(Upload.id).where(Upload.expires_at <= now)))
    removed = 0
    for upload_id in stale:
        part = partial_files.partial_path(settings, upload_id)
        try:
            fh: io.FileIO | None = partial_files.lock(part, upload_id)
        except partial_files.UploadBusy:
            continue
        except NotFound:
            fh = None
        try:
            with db.session() as session:
                result = session.execute(
                    delete(Upload).where(Upload.id == upload_id, Upload.expires_at <= now)
                )
                gone = bool(result.rowcount)  # type: ignore[attr-defined]
            if gone:
                part.unlink(missing_ok=True)
                partial_files.hashers.forget(upload_id)
                removed += 1
        finally:
            if fh is not None:
                fh.close()
    _sweep_orphans(db, settings, now)
    return removed


def _sweep_orphans(db: Database, settings: Settings, now: datetime) -> None:
    candidates = partial_files.older_than(settings, now - timedelta(hours=settings.upload_expiry_hours))
    if not candidates:
        return
    with db.session() as session:
        known = set(session.scalars(select(Upload.id).where(Upload.id.in_(list(candidates)))))
    for upload_id, path in candidates.items():
        if upload_id not in known:
            path.unlink(missing_ok=True)
