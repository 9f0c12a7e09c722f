"""A job's log: one file on the server that runners append to and users read or follow live.

The log is ``jobs_dir/<job id>/job.log``, outside the job's reach. The local runner writes the app's output
and its own ``[labcloud]`` lines there (:mod:`labcloud.execution.runner`); a remote runner sends its output
in chunks, at offsets counted from the start of its attempt (:func:`append`). Readers get the bytes from
an offset (:func:`read`), or follow them as server-sent events until the job ends (:func:`follow`). When
each line came is noted beside the log (:func:`times_path`).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.settings import Settings

MAX_OFFSET = 2**62  # the largest offset a request may name
FOLLOW_CHUNK = 1 << 20  # bytes read at a time while following
LINE_PIECE = 1 << 20  # a longer line is followed in pieces this long
POLL_S = 0.025  # how often a follower looks for new bytes (one fstat of the log it holds open)
STATE_POLL_S = 0.5  # and for the end of the job
LINE_END = re.compile(rb"\r\n|\r|\n")  # where a line ends, in a log and in the event stream


def job_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    """The job's folder on this server: its log, and the local runner's attempt folders."""
    return settings.jobs_dir / str(job_id)


def log_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / "job.log"


def times_path(log: Path) -> Path:
    """Beside a log, when its bytes came: lines "<size> <ms since the epoch>", each saying that by then the
    log held that many bytes. Whoever appends to a log notes it there (the job supervisor as it watches
    the job, the server as a remote runner's chunks arrive); a line's time is that of the first note
    that covers its end."""
    return log.with_name(log.name + ".times")


def _mark(log: Path, size: int) -> None:
    with open(times_path(log), "a", encoding="ascii") as fh:
        fh.write(f"{size} {int(time.time() * 1000)}\n")


class Clock:
    """When a log's bytes came, read from its notes as far as they go (and further as they grow)."""

    def __init__(self, log: Path) -> None:
        self.path = times_path(log)
        self.read_to = 0
        self.sizes: list[int] = []
        self.ms: list[int] = []

    def at(self, end: int) -> int | None:
        """When the byte before ``end`` had come (ms since the epoch); None when no note covers it yet."""
        if not self.sizes or self.sizes[-1] < end:
            self._more()
        i = bisect.bisect_left(self.sizes, end)
        return self.ms[i] if i < len(self.sizes) else None

    def _more(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.read_to)
                data = fh.read()
        except FileNotFoundError:
            return
        whole = data.rfind(b"\n") + 1
        self.read_to += whole
        for line in data[:whole].splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                size, ms = int(parts[0]), int(parts[1])
                if not self.sizes or size > self.sizes[-1]:
                    self.sizes.append(size)
                    self.ms.append(ms)


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
            fh.flush()
            _mark(path, fh.tell())
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


def read_timed(settings: Settings, job_id: uuid.UUID, offset: int = 0) -> str:
    """The log from ``offset`` as text, each line led by when it came (UTC, to the millisecond, as far as
    the notes tell; a line no note covers yet is led by the time now)."""
    data = read(settings, job_id, offset)
    clock = Clock(log_path(settings, job_id))
    out = []
    position = offset
    for line in data.splitlines(keepends=True):
        position += len(line)
        ms = clock.at(position)
        when = datetime.fromtimestamp((ms if ms is not None else time.time() * 1000) / 1000, UTC)
        out.append(when.isoformat(timespec="milliseconds").replace("+00:00", "Z") + " " + text(line))
    return "".join(out)


def text(data: bytes) -> str:
    """Log bytes as text: an app may write anything, so what is not UTF-8 shows as U+FFFD."""
    return data.decode("utf-8", errors="replace")


def tail_start(settings: Settings, job_id: uuid.UUID, nbytes: int) -> int:
    """Where to start showing the log's last ``nbytes``: at the first line that starts in them, or, when
    one line fills them, at its first whole character; not in the middle of a line or a character."""
    start = size(settings, job_id) - nbytes
    if start <= 0:
        return 0
    window = read(settings, job_id, start - 1, nbytes + 1)  # and the byte before: is ``start`` a line's?
    end = LINE_END.search(window)
    if end is not None and end.end() < len(window):
        return start - 1 + end.end()
    first = 1  # past the continuation bytes of a character begun before ``start`` (UTF-8's are 4 at most)
    while first < min(4, len(window)) and window[first] & 0xC0 == 0x80:
        first += 1
    return start - 1 + first


def resume_offset(offset: int, last_event_id: str | None) -> int:
    """Where a reader's stream starts: an ``EventSource`` that lost it asks again with the URL it first
    asked (its ``offset``) and the id of the last event it had (``Last-Event-ID``), which wins; an id that
    is not one of ours is ignored."""
    if last_event_id is None or not re.fullmatch(r"[0-9]{1,19}", last_event_id):
        return offset
    return min(int(last_event_id), MAX_OFFSET)


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
    times: bool = False,
) -> AsyncIterator[str]:
    """The log from ``offset`` as server-sent events, new bytes as they come, until the job has ended
    (``state``: its state when the reader was let in) or the reader has gone.

    An event ``log`` carries whole lines, one ``data:`` each, and as ``id`` the byte just past them, where a
    reader that lost the stream asks again from (:func:`resume_offset`): a line is sent once it has ended,
    so the id never points into a line or a character. Lines end as in the event stream itself, at LF, CR LF
    or a lone CR (a progress bar's steps: a CR inside a ``data:`` line would end it); a line longer than
    :data:`LINE_PIECE` comes in pieces cut between characters. What is left without its line end comes
    once the job has ended, then an event ``end`` with the job's state.

    With ``times``, each ``log`` event comes after an event ``times``: a JSON list with, for each of its
    lines, when it came (ms since the epoch; the time now for a line no note covers yet).
    """
    start = offset  # the byte of the log that ``pending`` starts at
    pending = b""
    current: JobState | None = state
    last_state_check = asyncio.get_running_loop().time()
    tail = _Tail(log_path(settings, job_id))
    clock = Clock(tail.path) if times else None
    try:
        while True:
            chunk = tail.read(start + len(pending), FOLLOW_CHUNK)
            if chunk:
                pending += chunk
                lines, used = _lines(pending, ended=False)
                if lines:
                    if clock is not None:
                        yield _times_event(clock, pending[:used], start, len(lines))
                    start, pending = start + used, pending[used:]
                    yield _log_event(lines, start)
                continue
            if current is None:  # the job is gone
                return
            if current in TERMINAL:
                lines, used = _lines(pending, ended=True)
                if lines:
                    if clock is not None:
                        yield _times_event(clock, pending[:used], start, len(lines))
                    yield _log_event(lines, start + used)
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


def _lines(data: bytes, ended: bool) -> tuple[list[str], int]:
    """The lines ``data`` completes and how many of its bytes they take, line ends included. A CR at the
    very end waits for the next byte (it may be a CR LF's first half) and a line without its end for the
    rest, unless the log has ``ended``."""
    stop = len(data) if ended else max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
    lines = data[:stop].splitlines()  # bytes end their lines at LF, CR LF and CR only, as the stream does
    if max(map(len, lines), default=0) > LINE_PIECE:
        lines = [piece for line in lines for piece in _pieces(line, whole=True)]
    rest = _pieces(data[stop:].removesuffix(b"\r"), whole=False)
    return [text(line) for line in lines + rest], stop + sum(map(len, rest))


def _pieces(line: bytes, whole: bool) -> list[bytes]:
    """A line longer than :data:`LINE_PIECE` in pieces that long, cut between characters, so that one that
    never ends is not held in memory (and the pieces are the same however the bytes came); the last piece
    only once the line is ``whole``."""
    pieces = []
    while len(line) > LINE_PIECE:
        cut = _cut(line, LINE_PIECE)
        pieces.append(line[:cut])
        line = line[cut:]
    return [*pieces, line] if whole else pieces


def _cut(data: bytes, at: int) -> int:
    """``at`` (inside ``data``), moved back to the start of the UTF-8 character it falls in: over three
    continuation bytes at most, never to the start; what is not UTF-8 is cut where ``at`` fell."""
    cut = at
    while cut > max(1, at - 3) and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut if data[cut] & 0xC0 != 0x80 else at


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


def _times_event(clock: Clock, data: bytes, start: int, count: int) -> str:
    """When each of the ``count`` lines ``data`` (from byte ``start``) brings came."""
    ends = [start + m.end() for m in LINE_END.finditer(data)]
    if len(ends) < count:  # a last line without its end, or a long line's pieces: the event's end
        ends += [start + len(data)] * (count - len(ends))
    now = int(time.time() * 1000)
    stamps = [clock.at(end) for end in ends[:count]]
    return f"event: times\ndata: {json.dumps([now if t is None else t for t in stamps])}\n\n"


def _log_event(lines: list[str], position: int) -> str:
    return "event: log\n" + "".join(f"data: {line}\n" for line in lines) + f"id: {position}\n\n"


def open_attempt(settings: Settings, job_id: uuid.UUID, attempt: int, where: str) -> int:
    """Mark where a remote runner's attempt starts in the job's log (after the earlier attempts' lines) and
    return that byte: the runner counts its log's offsets from its own first byte."""
    path = log_path(settings, job_id)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "ab") as fh:
        fh.write(f"[labcloud] attempt {attempt} on worker {where}\n".encode())
        fh.flush()
        _mark(path, fh.tell())
        return fh.tell()
