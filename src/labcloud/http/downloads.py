"""Sending a file or a folder of a space: straight from local disk (with Range), a redirect to a
presigned URL when the store is S3, or a zip streamed while it is built."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Protocol
from urllib.parse import quote

from fastapi import Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from labcloud.db.models import FileEntry
from labcloud.errors import NotFound
from labcloud.http.zipstream import ZipMember, zip_stream
from labcloud.runtime import Runtime
from labcloud.services import job_files
from labcloud.storage.base import Storage

# What a browser may show of a user's file instead of downloading it: images and plain text only (never
# HTML, SVG or anything else that can run script), and then in a sandbox that allows no script anyway.
VIEWABLE = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    **{
        ending: "text/plain; charset=utf-8"
        for ending in (".txt", ".log", ".csv", ".tsv", ".json", ".md", ".yaml", ".yml", ".out", ".err")
    },
}
VIEW_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def viewable(name: str) -> str | None:
    """The media type a file is shown as in the browser, or None: it is only downloaded."""
    return VIEWABLE.get(PurePosixPath(name.lower()).suffix)


class Stored(Protocol):
    """A file as sent: a file of a space, or the content a job's input was pinned to."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def blob_key(self) -> str | None: ...


def send_file(ctx: Runtime, request: Request, row: Stored, view: bool = False) -> Response:
    """The file's bytes: a download, or with ``view`` shown in the browser when :func:`viewable`."""
    etag = f'"{row.sha256}"' if row.sha256 else None
    if etag and etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    key = row.blob_key or ""
    headers = {"ETag": etag} if etag else {}
    shown_as = viewable(row.name) if view else None
    if shown_as:
        headers.update(VIEW_HEADERS)
    url = ctx.storage.presigned_get(key, row.name, ctx.settings.presign_expiry_s, shown_as)
    if url is not None:
        headers["Cache-Control"] = "private, no-store"
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers=headers)
    local = ctx.storage.local_path(key)
    if local is None or not local.is_file():
        raise NotFound(f"The bytes of '{row.path}' are missing from the store.")
    return LargeChunkFileResponse(
        local,
        filename=row.name,
        headers=headers,
        media_type=shown_as,
        content_disposition_type="inline" if shown_as else "attachment",
    )


class LargeChunkFileResponse(FileResponse):
    """Reads of 1 MiB instead of 64 KiB: a sixteenth of the thread hand-offs per byte sent."""

    chunk_size = 1 << 20


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def send_zip(
    storage: Storage, rows: list[FileEntry], root: str, filename: str, *, keep_root: bool = True
) -> StreamingResponse:
    """``rows`` (files under the folder ``root``) as one zip: inside a folder named like ``root``, or,
    without ``keep_root``, with paths relative to it."""
    start = len(root) + 1
    if keep_root:
        start = len(root.rpartition("/")[0]) + 1 if "/" in root else 0
    members = [ZipMember(r.path[start:], r.modified_at, _chunks(storage, r.blob_key or "")) for r in rows]
    return StreamingResponse(
        zip_stream(members),
        media_type="application/zip",
        headers={"Content-Disposition": _disposition(filename)},
    )


def send_outputs_zip(storage: Storage, job_id: uuid.UUID, rows: list[FileEntry]) -> StreamingResponse:
    """A job's outputs (``rows``: :func:`labcloud.services.jobs.outputs`) as one zip, paths relative to
    the job's folder."""
    name = f"job-{job_id}-outputs.zip"
    return send_zip(storage, rows, job_files.job_outputs_folder(job_id), name, keep_root=False)


def _chunks(storage: Storage, key: str) -> Callable[[], Iterator[bytes]]:
    return lambda: storage.iter_bytes(key)


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
