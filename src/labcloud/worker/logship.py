"""Background senders of one job: its log (every byte, in order, resumable) and its progress (throttled)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 0.25  # a new line reaches the server within about this plus one request
LOG_MAX_CHUNK = 1 << 20
MAX_STALLS = 40  # rounds in which the server took nothing, before the final flush gives up
PROGRESS_INTERVAL_S = 0.5  # at most two progress reports a second


class LogShipper:
    """Tails a job's log file and sends what is new, batched, from a thread.

    ``send(offset, data)`` posts ``data`` (the file's bytes from ``offset``) and returns the server's size
    of the log, which is where the next chunk starts: normally ``offset + len(data)``; after a gap (the
    server has less than ``offset``) the smaller size, so the missing bytes are sent again. An exception
    from ``send`` ends the thread; :meth:`close` raises it.
    """

    def __init__(
        self,
        path: Path,
        send: Callable[[int, bytes], int],
        *,
        interval_s: float = LOG_INTERVAL_S,
        max_chunk: int = LOG_MAX_CHUNK,
        name: str = "log",
    ) -> None:
        self.path = path
        self.send = send
        self.interval_s = interval_s
        self.max_chunk = max_chunk
        self.offset = 0
        self.error: BaseException | None = None
        self._hold_back: int | None = None  # hand_over: leave at most this many bytes unsent
        self._rest = b""
        self._final = threading.Event()
        self._wake = threading.Event()
        self._fd: int | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LogShipper:
        self._thread.start()
        return self

    def poke(self) -> None:
        """Look for new bytes now rather than at the next interval."""
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Send everything the file holds now, then stop; raise what ended the thread early."""
        self._final.set()
        self._wake.set()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def hand_over(self, limit: int, timeout: float | None = None) -> tuple[int, bytes]:
        """Like :meth:`close`, but the last bytes (at most ``limit``) are not sent: they are returned with
        their offset, for the caller to send with its last call (the job's finish)."""
        self._hold_back = limit
        self.close(timeout)
        return self.offset, self._rest

    def send_from(self, offset: int) -> None:
        """Send the file from ``offset`` on, here and now (once the thread has stopped): the server asked
        for earlier bytes than those handed over."""
        self.offset = offset
        self._hold_back = None
        try:
            if not self._ship_available():
                raise self._refused()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def stop(self) -> None:
        """Stop without waiting for anything to be sent (the job was taken away)."""
        self._final.set()
        self._wake.set()

    def _run(self) -> None:
        stalls = 0
        try:
            while True:
                final = self._final.is_set()
                if final and self._hold_back is not None:
                    if not self._ship_available():
                        raise self._refused()
                    left = self._unsent()
                    self._rest = os.pread(self._fd, left, self.offset) if self._fd is not None else b""
                    return
                if self._ship_available():
                    stalls = 0
                    if final:
                        return
                else:
                    stalls += 1
                    if final and stalls > MAX_STALLS:
                        raise self._refused()
                self._wake.wait(self.interval_s)
                self._wake.clear()
        except BaseException as exc:
            self.error = exc
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _refused(self) -> RuntimeError:
        return RuntimeError(f"the server keeps refusing the log at byte {self.offset}")

    def _unsent(self) -> int:
        """How many bytes the file holds past what the server has (0 while there is no file)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return 0
        return max(0, os.fstat(self._fd).st_size - self.offset)

    def _ship_available(self) -> bool:
        """Send until caught up with the file (True), or until the server stops taking bytes (False). After
        :meth:`hand_over` (also when it comes while this runs) the last bytes it asked for stay unsent."""
        refused = 0
        while (extra := self._unsent() - (self._hold_back or 0)) > 0:
            assert self._fd is not None
            before = self.offset
            self.offset = self.send(before, os.pread(self._fd, min(self.max_chunk, extra), before))
            if self.offset > before:
                refused = 0
                continue
            refused += 1  # the server asks for earlier bytes (a gap): resend, but not in a tight loop
            if refused >= 3:
                return False
        return True


class ProgressSender:
    """Sends the latest progress fraction at most every ``interval_s`` from a thread; reports that arrive
    in between replace each other. ``send`` may block (retrying); its exceptions end the thread and are
    kept in :attr:`error`."""

    def __init__(
        self,
        send: Callable[[float], None],
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        name: str = "progress",
    ) -> None:
        self.send = send
        self.interval_s = interval_s
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._pending: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ProgressSender:
        self._thread.start()
        return self

    def report(self, fraction: float) -> None:
        with self._lock:
            self._pending = fraction
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait()
                self._wake.clear()
                with self._lock:
                    fraction, self._pending = self._pending, None
                if fraction is None or self._stop.is_set():
                    continue
                self.send(fraction)
                self._stop.wait(self.interval_s)
        except BaseException as exc:
            self.error = exc
