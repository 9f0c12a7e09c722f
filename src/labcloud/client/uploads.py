"""Resumable uploads (tus 1.0): one file's upload, resumed after network failures and across runs, checked
end to end by SHA-256; which local files go where; and what a running upload tells its watcher.

:meth:`ResumableUpload.steps` is written once for both clients (see :mod:`labcloud.client.steps`): it
yields the requests to make (:class:`Create`, :class:`Offset`, :class:`Append`, :class:`Lookup`) and the
pauses between tries, and a connection carries them out.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import unicodedata
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, Any, Protocol, TypedDict
from urllib.parse import unquote

from labcloud.client.errors import ClientError, UploadMismatch
from labcloud.client.steps import Pause

Progress = Callable[[int], None]  # called with the number of bytes just transferred
Note = Callable[[str], None]  # called with a line worth telling the user (resuming, retrying)
RETRYABLE = frozenset({0, 408, 409, 423, 429, 460, 500, 502, 503, 504})
CHUNK = 1 << 20


class UploadUrls(Protocol):
    """Where resumable upload URLs are remembered between runs (see ``config.UploadState``)."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, url: str) -> None: ...
    def drop(self, key: str) -> None: ...


class TransferOptions(TypedDict, total=False):
    """How each file of an upload goes (see :class:`ResumableUpload`): ``urls`` remembers its URL for a
    later run, ``chunk_size`` bytes a request (default ``config.UPLOAD_CHUNK``), ``retries`` failures in a
    row before it ends (default ``config.UPLOAD_RETRIES``)."""

    urls: UploadUrls | None
    chunk_size: int
    retries: int


class UploadOptions(TransferOptions, total=False):
    """:class:`TransferOptions`, and ``on_note``, told what is worth telling the user (resuming, retrying)."""

    on_note: Note | None


def upload_key(server: str, local: Path, remote: str) -> str:
    """What identifies one upload across runs: server, local file (path, size, mtime) and destination."""
    stat = local.stat()
    return "|".join([server, str(local.resolve()), str(stat.st_size), str(stat.st_mtime_ns), remote])


def normalise_remote(path: str) -> str:
    """A path in the user's space as the server writes it (no empty or '.' segments, NFC)."""
    parts = [p for p in unicodedata.normalize("NFC", path.strip()).split("/") if p not in ("", ".")]
    return "/".join(parts)


def join_remote(*parts: str) -> str:
    """Path segments of the user's space joined with '/', without empty ones."""
    return posixpath.join(*[p.strip("/") for p in parts if p.strip("/")])


def plan_uploads(paths: Sequence[str | PathLike[str]], folder: str = "") -> list[tuple[Path, str]]:
    """(local file, path in your space) for each file: a file goes into ``folder``, a folder's files keep
    their paths below the folder's own name. FileNotFoundError for a path that is neither."""
    plan: list[tuple[Path, str]] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            base = path.resolve().name
            for found in sorted(path.rglob("*")):
                if found.is_file():
                    plan.append((found, join_remote(folder, base, found.relative_to(path).as_posix())))
        elif path.is_file():
            plan.append((path, join_remote(folder, path.name)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return plan


class UploadCancelled(Exception):
    """The ``cancel`` event of an upload was set (the user pressed Ctrl-C); the upload can be resumed."""


class UploadWatcher:
    """What a set of uploads tells whoever shows it; every method does nothing here. ``index`` is the
    file's place in the plan."""

    def started(self, index: int, local: Path, remote: str, size: int) -> None:
        """A file's upload begins (or continues: :meth:`moved` then reports the bytes already there)."""

    def moved(self, index: int, count: int) -> None:
        """``count`` more bytes of the file are on the server."""

    def note(self, message: str) -> None:
        """Something worth a line: resuming, retrying after a failure."""

    def finished(self, index: int, stored: dict[str, Any]) -> None:
        """The file is stored: ``{path, size, sha256, local}``."""

    def failed(self, index: int, error: ClientError) -> None:
        """The file's upload gave up (the others go on)."""


# ---------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Create:
    """Start an upload of ``size`` bytes to ``remote``; the answer is the response's headers."""

    remote: str
    size: int


@dataclass(frozen=True)
class Offset:
    """How many bytes of the upload at ``url`` the server holds; the answer is that number."""

    url: str


@dataclass(frozen=True)
class Append:
    """Send ``data`` at ``offset`` (with its checksum); the answer is the response's headers."""

    url: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class Lookup:
    """The stored file at ``remote`` (``{path, type, size, sha256, ...}``), or None; the answer."""

    remote: str


Step = Create | Offset | Append | Lookup | Pause
Headers = Mapping[str, str]


class ResumableUpload:
    """One run of an upload of ``local`` to ``remote``.

    The bytes go in chunks of ``chunk_size``, each with its checksum. After a network failure or a server
    error it waits (backing off), asks the server how much it holds and continues from there; ``retries``
    failures in a row end it. With ``urls`` the upload's URL is remembered, so the same upload run again
    after a crash continues where it stopped. The SHA-256 of the local file is computed from the bytes as
    they are sent (and, on resuming, from the local bytes the server already holds); the server's must
    equal it (:class:`UploadMismatch` otherwise).
    """

    def __init__(
        self,
        server: str,
        local: Path,
        remote: str,
        on_progress: Progress | None = None,
        urls: UploadUrls | None = None,
        chunk_size: int = 8 << 20,
        retries: int = 8,
        on_note: Note | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.local, self.remote = local, remote
        self.on_progress, self.urls, self.on_note, self.cancel = on_progress, urls, on_note, cancel
        self.chunk_size, self.retries = max(1, chunk_size), retries
        self.stat = local.stat()
        self.size = self.stat.st_size
        self.key = upload_key(server, local, remote) if urls is not None else ""
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

    def hash_to(self, fh: IO[bytes], offset: int) -> None:
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

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise UploadCancelled()

    def steps(self) -> Generator[Step, Any, dict[str, Any]]:
        """The upload, as steps; returns ``{path, size, sha256, local}`` of the stored file."""
        url = self.urls.get(self.key) if self.urls is not None else None
        offset: int | None = None
        failures = 0
        started_over = False
        with open(self.local, "rb") as fh:
            while True:
                self.check_cancel()
                try:
                    if url is None:
                        created: Headers = yield Create(self.remote, self.size)
                        url = created["Location"]
                        if self.urls is not None:
                            self.urls.put(self.key, url)
                        if "Labcloud-File-Sha256" in created:  # an empty file is done at once
                            return self.finish(fh, created)
                        offset = int(created.get("Upload-Offset", "0"))
                    elif offset is None:
                        offset = yield Offset(url)
                        if offset and not self.reported:
                            self.note(f"{self.local}: resuming at byte {offset} of {self.size}")
                    self.progress(offset)
                    self.hash_to(fh, offset)
                    data = fh.read(min(self.chunk_size, self.size - offset))
                    answer: Headers = yield Append(url, offset, data)
                except UploadMismatch:
                    raise
                except ClientError as exc:
                    if exc.status in (404, 410) and url is not None:
                        # expired, removed, or finished without our hearing it (the last answer was lost)
                        if self.urls is not None:
                            self.urls.drop(self.key)
                        self.hash_to(fh, self.size)
                        stored = self.stored_already((yield Lookup(self.remote)))
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
                    delay = min(30.0, 0.5 * 2 ** (failures - 1))
                    self.note(
                        f"{self.local}: {exc.detail}; retrying in {delay:g}s ({failures} of {self.retries})"
                    )
                    yield Pause(delay)
                    offset = None  # ask the server how much it holds
                    continue
                self.digest.update(data)
                self.hashed += len(data)
                offset = int(answer.get("Upload-Offset", offset + len(data)))
                failures = 0
                self.progress(offset)
                if "Labcloud-File-Sha256" in answer:
                    return self.finish(fh, answer)

    def stored_already(self, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """The stored file, when it is this file (its digest must already cover the whole file)."""
        if info and info.get("sha256") == self.digest.hexdigest() and info.get("size") == self.size:
            self.progress(self.size)
            sha256 = info["sha256"]
            return {"path": info["path"], "size": self.size, "sha256": sha256, "local": str(self.local)}
        return None

    def finish(self, fh: IO[bytes], answer: Headers) -> dict[str, Any]:
        if self.urls is not None:
            self.urls.drop(self.key)
        self.hash_to(fh, self.size)
        local_sha = self.digest.hexdigest()
        server_sha = answer["Labcloud-File-Sha256"]
        path = unquote(answer.get("Labcloud-File-Path", "")) or normalise_remote(self.remote)
        now = self.local.stat()
        if (now.st_size, now.st_mtime_ns) != (self.size, self.stat.st_mtime_ns):
            raise UploadMismatch(f"{self.local} changed while it was uploaded to {path}; upload it again")
        if server_sha != local_sha:
            raise UploadMismatch(
                f"{self.local} → {path}: the server stored SHA-256 {server_sha}, "
                f"but the local file's is {local_sha}"
            )
        size = int(answer.get("Labcloud-File-Size", self.size))
        return {"path": path, "size": size, "sha256": server_sha, "local": str(self.local)}
