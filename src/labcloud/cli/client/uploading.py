"""Resumable uploads (tus) of the ``labcloud`` client: one run of :meth:`LabcloudClient.upload`, resumed
after network failures and across runs, checked end to end by SHA-256."""

from __future__ import annotations

import hashlib
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import httpx

from labcloud.cli.client.errors import ClientError, UploadMismatch

if TYPE_CHECKING:
    from labcloud.cli.client.http import LabcloudClient

Progress = Callable[[int], None]  # called with the number of bytes just transferred
Note = Callable[[str], None]  # called with a line worth telling the user (resuming, retrying)
RETRYABLE = frozenset({0, 408, 409, 423, 429, 460, 500, 502, 503, 504})
CHUNK = 1 << 20


class UploadUrls(Protocol):
    """Where resumable upload URLs are remembered between runs (see ``config.UploadState``)."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, url: str) -> None: ...
    def drop(self, key: str) -> None: ...


def upload_key(server: str, local: Path, remote: str) -> str:
    """What identifies one upload across runs: server, local file (path, size, mtime) and destination."""
    stat = local.stat()
    return "|".join([server, str(local.resolve()), str(stat.st_size), str(stat.st_mtime_ns), remote])


def normalise_remote(path: str) -> str:
    """A path in the user's space as the server writes it (no empty or '.' segments, NFC)."""
    parts = [p for p in unicodedata.normalize("NFC", path.strip()).split("/") if p not in ("", ".")]
    return "/".join(parts)


class UploadCancelled(Exception):
    """The ``cancel`` event of an upload was set (the user pressed Ctrl-C); the upload can be resumed."""


class ResumableUpload:
    """One run of :meth:`LabcloudClient.upload`. The SHA-256 of the local file is computed from the bytes
    as they are sent (and, on resuming, from the local bytes the server already holds)."""

    def __init__(
        self,
        client: LabcloudClient,
        local: Path,
        remote: str,
        on_progress: Progress | None,
        urls: UploadUrls | None,
        chunk_size: int,
        retries: int,
        on_note: Note | None,
        cancel: threading.Event | None,
    ) -> None:
        self.client, self.local, self.remote = client, local, remote
        self.on_progress, self.urls, self.on_note, self.cancel = on_progress, urls, on_note, cancel
        self.chunk_size, self.retries = max(1, chunk_size), retries
        self.stat = local.stat()
        self.size = self.stat.st_size
        self.key = upload_key(client.base_url, local, remote) if urls is not None else ""
        self.digest = hashlib.sha256()
        self.hashed = 0  # bytes of the local file in self.digest
        self.reported = 0

    def note(self, message: str) -> None:
        if self.on_note is not None:
            self.on_note(message)

    def progress(self, offset: int) -> None:
        if self.on_progress is not None and offset != self.reported:
            self.on_progress(offset - self.reported)
        self.reported = offset

    def hash_to(self, fh: Any, offset: int) -> None:
        """Make the digest cover the local bytes [0, offset) and leave ``fh`` at ``offset``."""
        if offset < self.hashed:
            self.digest, self.hashed = hashlib.sha256(), 0
        fh.seek(self.hashed)
        while self.hashed < offset:
            block = fh.read(min(CHUNK, offset - self.hashed))
            if not block:
                raise UploadMismatch(f"{self.local} became shorter while it was being uploaded")
            self.digest.update(block)
            self.hashed += len(block)

    def pause(self, failures: int, why: str) -> None:
        delay = min(30.0, 0.5 * 2 ** (failures - 1))
        self.note(f"{self.local}: {why}; retrying in {delay:g}s ({failures} of {self.retries})")
        if self.cancel is not None:
            if self.cancel.wait(delay):
                raise UploadCancelled()
        else:
            time.sleep(delay)

    def run(self) -> dict[str, Any]:
        url = self.urls.get(self.key) if self.urls is not None else None
        offset: int | None = None
        failures = 0
        started_over = False
        with open(self.local, "rb") as fh:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    raise UploadCancelled()
                try:
                    if url is None:
                        created = self.client.tus_create(self.remote, self.size)
                        url = created.headers["Location"]
                        if self.urls is not None:
                            self.urls.put(self.key, url)
                        if "Labcloud-File-Sha256" in created.headers:  # an empty file is done at once
                            return self.finish(fh, created)
                        offset = int(created.headers.get("Upload-Offset", "0"))
                    elif offset is None:
                        offset = self.client.tus_offset(url)
                        if offset and not self.reported:
                            self.note(f"{self.local}: resuming at byte {offset} of {self.size}")
                    self.progress(offset)
                    self.hash_to(fh, offset)
                    data = fh.read(min(self.chunk_size, self.size - offset))
                    answer = self.client.tus_append(url, offset, data)
                except ClientError as exc:
                    if exc.status in (404, 410) and url is not None:
                        # expired, removed, or finished without our hearing it (the last answer was lost)
                        if self.urls is not None:
                            self.urls.drop(self.key)
                        stored = self.stored_already(fh)
                        if stored is not None:
                            return stored
                        if started_over:
                            raise
                        started_over = True
                        self.note(f"{self.local}: the server no longer has this upload; starting again")
                        url, offset = None, None
                        continue
                    if exc.status not in RETRYABLE or (exc.status == 409 and url is None):
                        raise
                    failures += 1
                    if failures > self.retries:
                        raise
                    self.pause(failures, exc.detail)
                    offset = None  # ask the server how much it holds
                    continue
                self.digest.update(data)
                self.hashed += len(data)
                offset = int(answer.headers.get("Upload-Offset", offset + len(data)))
                failures = 0
                self.progress(offset)
                if "Labcloud-File-Sha256" in answer.headers:
                    return self.finish(fh, answer)

    def stored_already(self, fh: Any) -> dict[str, Any] | None:
        self.hash_to(fh, self.size)
        info = self.client.file_info(self.remote)
        if info and info.get("sha256") == self.digest.hexdigest() and info.get("size") == self.size:
            self.progress(self.size)
            sha256 = info["sha256"]
            return {"path": info["path"], "size": self.size, "sha256": sha256, "local": str(self.local)}
        return None

    def finish(self, fh: Any, answer: httpx.Response) -> dict[str, Any]:
        if self.urls is not None:
            self.urls.drop(self.key)
        self.hash_to(fh, self.size)
        local_sha = self.digest.hexdigest()
        server_sha = answer.headers["Labcloud-File-Sha256"]
        path = unquote(answer.headers.get("Labcloud-File-Path", "")) or normalise_remote(self.remote)
        now = self.local.stat()
        if (now.st_size, now.st_mtime_ns) != (self.size, self.stat.st_mtime_ns):
            raise UploadMismatch(f"{self.local} changed while it was uploaded to {path}; upload it again")
        if server_sha != local_sha:
            raise UploadMismatch(
                f"{self.local} → {path}: the server stored SHA-256 {server_sha}, "
                f"but the local file's is {local_sha}"
            )
        size = int(answer.headers.get("Labcloud-File-Size", self.size))
        return {"path": path, "size": size, "sha256": server_sha, "local": str(self.local)}
