"""Uploads that go straight from the client to the S3 store through presigned part URLs.

The bytes never pass through the API. On completion the server joins the parts, then reads the object
back once to check its size and SHA-256 before it becomes visible in its space (the user's, or a project's).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from labcloud.db.engine import Database
from labcloud.db.models import DirectUpload
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput, NotFound
from labcloud.services import file_store, files, maintenance, spaces
from labcloud.settings import Settings
from labcloud.storage.base import Storage

DEFAULT_PART_SIZE = 64 * 2**20
MAX_PARTS = 10_000


def start(
    db: Database,
    storage: Storage,
    settings: Settings,
    space: files.Space,
    raw_path: str,
    size: int,
    sha256: str | None,
    part_size: int | None,
) -> dict[str, Any]:
    maintenance.refuse_new_work(db.engine)
    path = files.clean(raw_path, ["body", "path"])
    files.check_target(db, space, path, ["body", "path"])
    file_store.check_room(db, settings, space, size, path)
    part_size = part_size or max(DEFAULT_PART_SIZE, math.ceil(size / MAX_PARTS))
    count = max(1, math.ceil(size / part_size))
    if count > MAX_PARTS:
        raise InvalidInput.field(["body", "part_size"], f"{count} parts; the store takes at most {MAX_PARTS}")
    key = storage.new_key()
    store_id = storage.start_multipart(key)  # local disk refuses here, with a pointer to tus
    expires_s = settings.presign_expiry_s
    upload = DirectUpload(
        owner_id=space.user_id,
        project_id=space.project_id,
        path=path,
        size=size,
        sha256=sha256,
        part_size=part_size,
        blob_key=key,
        store_upload_id=store_id,
        expires_at=utcnow() + timedelta(seconds=expires_s, hours=1),  # time left to complete
    )
    with db.session() as session:
        session.add(upload)
        session.flush()
        upload_id, expires_at = upload.id, upload.expires_at
    parts = [
        {"part_number": n, "url": storage.presign_part(key, store_id, n, expires_s)}
        for n in range(1, count + 1)
    ]
    return {
        "id": upload_id,
        "path": path,
        "size": size,
        "part_size": part_size,
        "parts": parts,
        "expires_at": expires_at,
    }


def _get(db: Database, owner_id: uuid.UUID, upload_id: uuid.UUID) -> DirectUpload:
    with db.session() as session:
        upload = session.scalar(
            select(DirectUpload).where(DirectUpload.id == upload_id, DirectUpload.owner_id == owner_id)
        )
        if upload is None:
            raise NotFound(f"You have no direct upload {upload_id}.")
        session.expunge(upload)
    return upload


def complete(
    db: Database,
    storage: Storage,
    settings: Settings,
    owner_id: uuid.UUID,
    upload_id: uuid.UUID,
    parts: list[tuple[int, str]],
) -> files.Entry:
    upload = _get(db, owner_id, upload_id)
    expected = max(1, math.ceil(upload.size / upload.part_size))
    numbers = sorted(n for n, _ in parts)
    if numbers != list(range(1, expected + 1)):
        raise InvalidInput.field(["body", "parts"], f"expected parts 1 to {expected}, each once")
    try:
        storage.complete_multipart(upload.blob_key, upload.store_upload_id, sorted(parts))
    except Exception as exc:  # the store refused the parts (a missing or wrong ETag)
        raise InvalidInput.field(["body", "parts"], f"the store could not join the parts: {exc}") from exc
    try:
        size, sha256 = _measure(storage, upload.blob_key)
        if size != upload.size:
            raise InvalidInput.field(["body", "parts"], f"the parts hold {size} bytes, not {upload.size}")
        if upload.sha256 and sha256 != upload.sha256:
            raise InvalidInput.field(
                ["body", "sha256"], f"the upload's SHA-256 is {sha256}, not the one given"
            )
    except BaseException:
        storage.delete([upload.blob_key])
        _forget(db, upload_id)
        raise
    space = files.Space(upload.project_id, owner_id)
    try:
        with db.session() as session:
            spaces.writable(session, owner_id, upload.project_id)
    except BaseException:
        storage.delete([upload.blob_key])
        _forget(db, upload_id)
        raise
    item = files.Upload(upload.path, Path(), size, sha256)
    entries = file_store.index_stored(db, storage, settings, space, [item], [upload.blob_key])
    _forget(db, upload_id)
    return entries[0]


def _measure(storage: Storage, key: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in storage.iter_bytes(key):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def abort(db: Database, storage: Storage, owner_id: uuid.UUID, upload_id: uuid.UUID) -> None:
    upload = _get(db, owner_id, upload_id)
    storage.abort_multipart(upload.blob_key, upload.store_upload_id)
    _forget(db, upload_id)


def _forget(db: Database, upload_id: uuid.UUID) -> None:
    with db.session() as session:
        upload = session.get(DirectUpload, upload_id)
        if upload is not None:
            session.delete(upload)


def expire(db: Database, storage: Storage) -> int:
    """Abort direct uploads whose URLs have expired without completion."""
    with db.session() as session:
        stale = [
            (u.id, u.blob_key, u.store_upload_id)
            for u in session.scalars(select(DirectUpload).where(DirectUpload.expires_at < utcnow()))
        ]
    for upload_id, key, store_id in stale:
        with contextlib.suppress(Exception):  # already gone from the store
            storage.abort_multipart(key, store_id)
        _forget(db, upload_id)
    return len(stale)
