"""A user's file space on local disk: upload (streamed, checksummed, published atomically), list, delete.

Bytes are written to a temporary file outside the user's space and renamed into place only once complete,
so a killed server or client never leaves a partial file that looks ready.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from labcloud.errors import InvalidInput, LabcloudError, NotFound
from labcloud.settings import Settings
from labcloud.storage.paths import clean_path, confined


class TooLarge(LabcloudError):
    status, title, type_slug = 413, "Too large", "too-large"


@dataclass
class Entry:
    path: str
    type: str  # "file" | "folder"
    size: int
    modified_at: datetime
    sha256: str | None = None


def space(settings: Settings, user_id: uuid.UUID) -> Path:
    return settings.files_dir / str(user_id)


def _entry(root: Path, path: Path, sha256: str | None = None) -> Entry:
    stat = path.stat()
    return Entry(
        path=path.relative_to(root).as_posix(),
        type="folder" if path.is_dir() else "file",
        size=0 if path.is_dir() else stat.st_size,
        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        sha256=sha256,
    )


async def upload(
    settings: Settings, user_id: uuid.UUID, raw_path: str, body: AsyncIterator[bytes], length: int | None
) -> Entry:
    rel = clean_path(raw_path, ["path", "path"])
    root = space(settings, user_id)
    root.mkdir(parents=True, exist_ok=True)
    target = confined(root, rel)
    if target.is_dir():
        raise InvalidInput.field(["path", "path"], f"'{rel}' is a folder")
    limit = settings.max_upload_bytes
    if length is not None and length > limit:
        raise TooLarge(f"The file is {length} bytes; the largest allowed is {limit} bytes.")
    staging = settings.home / "uploads"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    fh = await run_in_threadpool(open, tmp, "wb")
    try:
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"The upload passed the limit of {limit} bytes; nothing was stored.")
            digest.update(chunk)
            await run_in_threadpool(fh.write, chunk)
        await run_in_threadpool(_finish, fh)
        if length is not None and size != length:
            raise InvalidInput.field(["header", "content-length"], f"got {size} bytes of {length} announced")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    finally:
        if not fh.closed:
            fh.close()
        tmp.unlink(missing_ok=True)
    return _entry(root, target, digest.hexdigest())


def _finish(fh: object) -> None:
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]
    fh.close()  # type: ignore[attr-defined]


def resolve(settings: Settings, user_id: uuid.UUID, raw_path: str) -> Path:
    rel = clean_path(raw_path, ["path", "path"])
    target = confined(space(settings, user_id), rel)
    if not target.exists():
        raise NotFound(f"You have no file or folder '{rel}'.")
    return target


def list_folder(settings: Settings, user_id: uuid.UUID, prefix: str) -> list[Entry]:
    root = space(settings, user_id)
    folder = root if not prefix.strip("/") else confined(root, clean_path(prefix, ["query", "prefix"]))
    if not folder.exists():
        if folder == root:
            return []
        raise NotFound(f"You have no folder '{prefix}'.")
    if folder.is_file():
        return [_entry(root, folder)]
    return [_entry(root, p) for p in sorted(folder.iterdir()) if not p.is_symlink()]


def delete(settings: Settings, user_id: uuid.UUID, raw_path: str) -> None:
    target = resolve(settings, user_id, raw_path)
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
