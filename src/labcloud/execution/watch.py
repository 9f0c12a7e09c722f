"""Following a supervised job: its log from any byte offset (progress lines parsed on the way), a cancel
when the observer asks for one, and its result once the supervisor records it; "lost" when the supervisor
vanishes without one. Works the same for a job this process launched and one an earlier process did.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Protocol

from labcloud.execution import supervise
from labcloud.execution.process import (
    Handle,
    LaunchSpec,
    Pidfd,
    ProcessResult,
    launch,
    read_result,
    reap_children,
    same_process,
)

__all__ = ["Observer", "run", "watch"]


class Observer(Protocol):
    """Receives a job's output and progress while :func:`watch` follows it."""

    def on_output(self, text: str) -> None:
        """New log text, in order; whole lines where possible (``::progress`` lines included)."""

    def on_progress(self, fraction: float) -> None:
        """A progress report in 0..1 from a log line ``::progress 0.42``."""

    def should_cancel(self) -> bool:
        """Polled while the job runs; True cancels it (once)."""


_PROGRESS = re.compile(r"::progress\s+(\S+)")
_MAX_PARTIAL = 64 * 1024  # emit an unterminated line once it is this long...
_PARTIAL_WAIT_S = 1.0  # ...or this old (a prompt, a progress bar drawn with \r)


class _LogTail:
    """Follows the log file from a byte offset and feeds an observer."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.fd: int | None = None
        self.pending = b""  # bytes after the last newline
        self.pending_since = 0.0
        self.line_start = True  # whether the next emitted text starts a line (progress parsing)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _read_new(self) -> bytes:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""
        chunks = []
        while chunk := os.pread(self.fd, 1 << 20, self.offset):
            chunks.append(chunk)
            self.offset += len(chunk)
        return b"".join(chunks)

    def pump(self, observer: Observer, final: bool = False) -> None:
        """Pass on new whole lines (and everything when ``final``)."""
        new = self._read_new()
        if new and not self.pending:
            self.pending_since = time.monotonic()
        data = self.pending + new
        if final:
            cut = len(data)
        else:
            cut = data.rfind(b"\n") + 1
            stale = time.monotonic() - self.pending_since > _PARTIAL_WAIT_S
            if len(data) - cut > _MAX_PARTIAL or (cut == 0 and data and stale):
                cut = len(data)
        out, self.pending = data[:cut], data[cut:]
        if self.pending and cut:
            self.pending_since = time.monotonic()
        text = self.decoder.decode(out, final=final)
        if text:
            observer.on_output(text)
            self._progress(text, observer)

    def _progress(self, text: str, observer: Observer) -> None:
        lines = text.split("\n")
        complete = lines[:-1]
        for i, line in enumerate(complete):
            if i == 0 and not self.line_start:
                continue  # the tail of a line whose start was emitted earlier
            m = _PROGRESS.fullmatch(line.strip())
            if m:
                try:
                    value = float(m.group(1))
                except ValueError:
                    continue
                if math.isfinite(value) and 0.0 <= value <= 1.0:
                    observer.on_progress(value)
        self.line_start = lines[-1] == ""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _cleanup_lost(handle: Handle) -> None:
    """Kill what a vanished supervisor left: the processes still in its session.

    Sandboxed jobs die with the supervisor (bwrap --die-with-parent); unsandboxed direct children too
    (PR_SET_PDEATHSIG), but their own children would linger. The session id is safe to use: while any
    process is in that session, the kernel does not give the supervisor's pid to a new process.
    """
    leader = supervise.read_stat(handle.pid)
    if leader is not None and not same_process(handle, leader):
        return  # the pid now belongs to someone else, and so may the session
    for info in supervise.process_table().values():
        if info.session == handle.pid and info.pid != handle.pid and not info.dead:
            supervise.kill(info.pid, signal.SIGKILL)


def watch(
    handle: Handle,
    spec: LaunchSpec,
    observer: Observer,
    *,
    log_offset: int = 0,
    poll_s: float = 0.05,
    detach: threading.Event | None = None,
) -> ProcessResult | None:
    """Follow a job until it ends and return its result.

    Streams ``spec.log_path`` from ``log_offset`` to ``observer``, cancels the job when
    ``observer.should_cancel()`` says so, and returns the supervisor's recorded result; "lost" if the
    supervisor vanished without recording one. Works on a handle from an earlier server process; of
    ``spec`` only ``log_path`` and ``status_path`` are used. None when ``detach`` is set first: the
    follower stops (its server is stopping) and the job runs on, to be followed again later.
    """
    tail = _LogTail(spec.log_path, log_offset)
    sup = Pidfd(handle)
    cancel_sent = False
    try:
        while True:
            result = read_result(spec.status_path)
            if result is not None:
                break
            if sup.exited():
                # It may have written the status just before exiting.
                result = read_result(spec.status_path)
                if result is None:
                    _cleanup_lost(handle)
                    result = ProcessResult(
                        outcome="lost",
                        exit_code=None,
                        wall_s=0.0,
                        cpu_s=0.0,
                        peak_memory_mb=0.0,
                        message="the job's supervisor process disappeared without recording a result",
                    )
                break
            tail.pump(observer)
            if not cancel_sent and observer.should_cancel():
                sup.send(signal.SIGTERM)
                cancel_sent = True
            sup.exited(poll_s)  # sleeps, but wakes up at once when the supervisor exits
            if detach is not None and detach.is_set():
                return None
        # The status is written after the whole process tree is gone, so the log is complete now.
        tail.pump(observer, final=True)
        sup.exited(5.0)  # it exits right after writing the status; don't leave a zombie behind
    finally:
        sup.close()
        tail.close()
    reap_children()
    return result


def run(spec: LaunchSpec, observer: Observer) -> ProcessResult:
    """Launch a job and watch it to the end."""
    result = watch(launch(spec), spec, observer)
    assert result is not None  # (nothing detaches it)
    return result
