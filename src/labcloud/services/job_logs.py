"""A job's log: one file on the server that runners append to and users read or follow live.

The log is ``jobs_dir/<job id>/job.log``, outside the job's reach. The local runner writes the app's output
and its own ``[labcloud]`` lines there (:mod:`labcloud.execution.runner`); a remote runner sends its output
in chunks, at offsets counted from the start of its attempt (:func:`append`). Readers get the bytes from
an offset (:func:`read`), or follow them as server-sent events until the job ends (:func:`follow`).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.settings import Settings

MAX_OFFSET = 2**62  # the largest offset a request may name
FOLLOW_CHUNK = 1 << 20  # bytes read at a time while following
POLL_S = 0.025  # how often a follower looks for new bytes (one fstat of the log it holds open)
STATE_POLL_S = 0.5  # and for the end of the job


def job_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    """The job's folder on this server: its log, and the local runner's attempt folders."""
    return settings.jobs_dir / str(job_id)


def log_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / "job.log"


# ------------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class Appended:
    """Bytes of the attempt's log the server holds; ``gap``: the chunk started past them (not written)."""

    size: int
    gap: bool = False


def append(settings: Settings, job_id: uuid.UUID, base: int, offset: int, data: bytes) -> Appended:
    """Write a runner's chunk that starts at ``offset`` of its attempt's log, which begins at byte ``base``
    of the job's log. Idempotent: bytes the log already holds are not written again, so a runner may send
    a chunk twice; a chunk that would leave a gap is refused."""
    path = log_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        size = max(0, fh.tell() - base)
        if offset > size:
            return Appended(size, gap=True)
        fresh = data[size - offset :] if offset < size else data
        if fresh:
            fh.write(fresh)
        return Appended(size + len(fresh))


# ------------------------------------------------------------------------------------------------ reading


def size(settings: Settings, job_id: uuid.UUID) -> int:
    path = log_path(settings, job_id)
    return path.stat().st_size if path.exists() else 0


def read(settings: Settings, job_id: uuid.UUID, offset: int = 0, limit: int = -1) -> bytes:
    """The log's bytes from ``offset`` (at most ``limit``); nothing when there is no log yet."""
    path = log_path(settings, job_id)
    if not path.exists():
        return b""
    with open(path, "rb") as fh:
        if offset >= os.fstat(fh.fileno()).st_size:  # also one no file system could seek to
            return b""
        fh.seek(offset)
        return fh.read(limit)


def text(data: bytes) -> str:
    """Log bytes as text: an app may write anything, so what is not UTF-8 shows as U+FFFD."""
    return data.decode("utf-8", errors="replace")


def state_of(db: Database, job_id: uuid.UUID) -> JobState | None:
    with db.session() as session:
        job = session.get(Job, job_id)
        return None if job is None else JobState(job.state)


async def follow(
    db: Database,
    settings: Settings,
    job_id: uuid.UUID,
    offset: int,
    state: JobState,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The log from ``offset`` as server-sent events, new bytes as they come, until the job has ended
    (``state``: its state when the reader was let in) or the reader has gone.

    An event ``log`` carries whole lines, one ``data:`` each, and as ``id`` the bytes read so far; a last
    line without its newline comes once the job has ended, then an event ``end`` with the job's state.
    """
    position = offset
    current: JobState | None = state
    last_state_check = asyncio.get_running_loop().time()
    pending = b""
    tail = _Tail(log_path(settings, job_id))
    try:
        while True:
            chunk = tail.read(position, FOLLOW_CHUNK)
            if chunk:
                position += len(chunk)
                pending += chunk
                lines, _, pending = pending.rpartition(b"\n")
                if lines:
                    yield _log_event(text(lines).split("\n"), position)
                continue
            if current is None:  # the job is gone
                return
            if current in TERMINAL:
                if pending:
                    yield _log_event([text(pending)])
                yield f"event: end\ndata: {json.dumps({'state': current.value})}\n\n"
                return
            if await disconnected():
                return
            await asyncio.sleep(POLL_S)
            now = asyncio.get_running_loop().time()
            if now - last_state_check >= STATE_POLL_S:
                last_state_check = now
                current = await run_in_threadpool(state_of, db, job_id)
    finally:
        tail.close()


class _Tail:
    """The log, held open while it is followed: looking for new bytes is one fstat, not an open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def read(self, offset: int, limit: int) -> bytes:
        """The bytes from ``offset`` (at most ``limit``); nothing while there is no log yet. The log is only
        ever appended to (and deleted with its ended job): the same file all along."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""
        if offset >= os.fstat(self.fd).st_size:
            return b""
        return os.pread(self.fd, limit, offset)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _log_event(lines: list[str], position: int | None = None) -> str:
    event = "event: log\n" + "".join(f"data: {line}\n" for line in lines)
    return event + (f"id: {position}\n\n" if position is not None else "\n")


def open_attempt(settings: Settings, job_id: uuid.UUID, attempt: int, where: str) -> int:
    """Mark where a remote runner's attempt starts in the job's log (after the earlier attempts' lines) and
    return that byte: the runner counts its log's offsets from its own first byte."""
    path = log_path(settings, job_id)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "ab") as fh:
        fh.write(f"[labcloud] attempt {attempt} on worker {where}\n".encode())
        return fh.tell()
