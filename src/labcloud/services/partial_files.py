"""The partial file of a resumable upload (``uploads_dir/tus/<id>``): where its bytes collect until the
upload is complete.

One writer at a time (an exclusive ``flock``; a second is refused with 409), bytes written as the body
arrives and on disk (fsync) before they count, cut back to the acknowledged offset when a write fails or
is abandoned, and the SHA-256 of the whole file computed on the way (:data:`hashers`, this process only).
What is acknowledged is the upload service's business (:mod:`labcloud.services.uploads`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool

from labcloud.errors import Conflict, NotFound
from labcloud.services import storage_limits
from labcloud.services.write_behind import WriteBehind
from labcloud.settings import Settings

WRITE_BUFFER = 1 << 20  # bytes collected from the body before one write to disk
MAX_HASHERS = 4096


class UploadBusy(Conflict):
    type_slug = "upload-busy"


def partial_path(settings: Settings, upload_id: uuid.UUID) -> Path:
    return settings.uploads_dir / "tus" / upload_id.hex


def create(settings: Settings, upload_id: uuid.UUID) -> Path:
    """A new, empty partial file, readable by this server alone."""
    part = partial_path(settings, upload_id)
    part.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return part


def older_than(settings: Settings, moment: datetime) -> dict[uuid.UUID, Path]:
    """The partial files last written before ``moment``, by upload."""
    folder = settings.uploads_dir / "tus"
    if not folder.is_dir():
        return {}
    limit = moment.timestamp()
    found: dict[uuid.UUID, Path] = {}
    for entry in os.scandir(folder):
        try:
            upload_id = uuid.UUID(hex=entry.name)
        except ValueError:
            continue
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
            found[upload_id] = Path(entry.path)
    return found


class _Hashers:
    """The running SHA-256 of each upload, with the offset it has reached (this process only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[uuid.UUID, tuple[int, Any]] = OrderedDict()

    def take(self, upload_id: uuid.UUID, offset: int) -> Any | None:
        """A copy of the hash at ``offset`` (fresh at 0); None when this process has not followed it."""
        with self._lock:
            held = self._items.get(upload_id)
        if held is not None and held[0] == offset:
            return held[1].copy()
        return hashlib.sha256() if offset == 0 else None

    def keep(self, upload_id: uuid.UUID, offset: int, digest: Any | None) -> None:
        with self._lock:
            if digest is None:
                self._items.pop(upload_id, None)
                return
            self._items[upload_id] = (offset, digest)
            self._items.move_to_end(upload_id)
            while len(self._items) > MAX_HASHERS:
                self._items.popitem(last=False)

    def forget(self, upload_id: uuid.UUID) -> None:
        with self._lock:
            self._items.pop(upload_id, None)


hashers = _Hashers()


def lock(path: Path, upload_id: uuid.UUID) -> io.FileIO:
    """The partial file, open for writing under an exclusive lock; 409 while another request holds it."""
    try:
        fh = io.FileIO(path, "r+")
    except FileNotFoundError:
        raise NotFound(f"The bytes of upload {upload_id} are gone; start again.") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            linked = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            linked = False
        if not linked:  # terminated or expired between open and lock
            raise NotFound(f"The bytes of upload {upload_id} are gone; start again.")
    except BlockingIOError:
        fh.close()
        raise UploadBusy(
            f"Another request is writing to upload {upload_id}; wait for it to end, then ask for the offset."
        ) from None
    except BaseException:
        fh.close()
        raise
    return fh


def start(fh: io.FileIO, offset: int) -> None:
    """Write from ``offset`` on."""
    fh.truncate(offset)  # drop unacknowledged bytes of an earlier, broken PATCH
    fh.seek(offset)


def _write(fh: io.FileIO, data: bytes | bytearray, hashes: list[Any]) -> None:
    """Hash and write one buffer (in a worker thread: hashlib lets go of the GIL on large inputs)."""
    for digest in hashes:
        digest.update(data)
    view = memoryview(data)
    while view:
        written = fh.write(view)
        if not written:
            raise OSError("the partial file took no bytes")
        view = view[written:]


def _sync(fh: io.FileIO) -> None:
    os.fsync(fh.fileno())


def discard(fh: io.FileIO, offset: int) -> None:
    """Cut the file back to ``offset``, durably."""
    fh.truncate(offset)
    os.fsync(fh.fileno())


async def receive(
    fh: io.FileIO, body: AsyncIterable[bytes], offset: int, length: int, digest: Any, check: Any
) -> tuple[int, bool] | None:
    """Write the body at the file's position: (bytes written and fsynced, whether the body broke off).

    At most two buffers of :data:`WRITE_BUFFER` bytes are held at a time (one written while the next fills).
    None when the body broke off under a checksum (then nothing was kept). A body that passes ``length``
    is refused whole (413). On any other failure the file is cut back to ``offset``.
    """
    buffer = bytearray()
    count = 0
    interrupted = False
    hashes = [h for h in (digest, check) if h is not None]
    iterator = aiter(body)
    writes = WriteBehind()
    try:
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception:  # the client went away (ClientDisconnect) or the stream broke
                interrupted = True
                break
            if not chunk:
                continue
            count += len(chunk)
            if offset + count > length:
                raise storage_limits.TooLarge(
                    f"The body passed the Upload-Length of {length} bytes; this chunk was discarded."
                )
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                full, buffer = buffer, bytearray()
                await writes.put(_write, fh, full, hashes)  # the next MiB arrives meanwhile
        await writes.drain()
        if interrupted and check is not None:
            await run_in_threadpool(discard, fh, offset)
            return None
        if buffer:
            await run_in_threadpool(_write, fh, buffer, hashes)
        await run_in_threadpool(_sync, fh)
    except BaseException:
        try:
            await writes.settle()  # no thread writes while the file is cut back
        finally:
            with contextlib.suppress(OSError):
                discard(fh, offset)  # blocking, but only on this rare path (also when cancelled)
        raise
    return count, interrupted
