"""Wake-ups: "there is new work" reaches whatever waits for it, in this process and on every server of the
database.

In a process, :class:`Waker` wakes coroutines waiting for work (remote workers' long-polling claims).

In one process a submit wakes the dispatcher and the waiting worker claims directly. With several
replicas on PostgreSQL the submit may land on a replica that does not dispatch, and the worker's long
poll may wait on a third; each replica therefore also sends a NOTIFY on one channel and LISTENs on it,
waking its own waiters when another replica says so. Without it they would only find the work at their
next round (the scheduler's interval, a claim's recheck). The NOTIFY goes from a thread of its own, one
for however many submits came while the last one was being sent: a submit does not wait for it. SQLite
has a single machine and no channel: nothing is sent there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from labcloud.db.engine import Database
from labcloud.execution.loops import Loop

log = logging.getLogger(__name__)
CHANNEL = "labcloud_work"
RECONNECT_S = 1.0
STOP_CHECK_S = 0.25  # how long a stopping server may wait for its listener


class Waker:
    """Wakes coroutines waiting (on any event loop) for new work; a generation count closes the gap
    between looking for work and starting to wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self.generation = 0

    @property
    def waiting(self) -> bool:
        """Whether anything waits now."""
        with self._lock:
            return bool(self._waiters)

    def notify(self) -> None:
        with self._lock:
            self.generation += 1
            waiters = list(self._waiters)
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, since: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self.generation != since:
                return
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups(Loop):
    """Sends "new work" to the other replicas, and calls ``wake_here`` when one of them sends it. Listening
    is the loop's step: one connection, held until the server stops or the connection fails (then a new one
    after ``RECONNECT_S``)."""

    def __init__(self, db: Database, wake_here: Callable[[], None]) -> None:
        super().__init__("wakeups", RECONNECT_S, step_first=True)
        self.db = db
        self.wake_here = wake_here
        self.me = secrets.token_hex(8)  # our own notifications come back to us: ignore them
        self.enabled = db.engine.dialect.name == "postgresql"
        self._listening = threading.Event()
        self._pending = threading.Event()
        self._sender: threading.Thread | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        super().start()
        if self._sender is None:
            self._sender = threading.Thread(
                target=self._send_pending, name="labcloud-wakeups-send", daemon=True
            )
            self._sender.start()
        self._listening.wait(5)  # ready before the server answers, so no wake-up is missed at start

    def stop(self, timeout_s: float = 5.0) -> None:
        super().stop(timeout_s)
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.join(timeout=timeout_s)  # it sees the stop within STOP_CHECK_S

    def send(self) -> None:
        """Tell the other replicas, soon (from the sending thread), once for every wake-up until then."""
        if self.enabled:
            self._pending.set()

    def _send_pending(self) -> None:
        while not self.stopping:
            if self._pending.wait(STOP_CHECK_S):
                self._pending.clear()
                self.send_now()
        if self._pending.is_set():  # the last wake-ups before stopping
            self._pending.clear()
            self.send_now()

    def send_now(self) -> None:
        """Tell the other replicas; a failure only costs them the wait until their next round."""
        if not self.enabled:
            return
        try:
            with self.db.engine.connect() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :me)"), {"channel": CHANNEL, "me": self.me})
                conn.commit()
        except Exception as exc:
            log.warning("could not tell the other servers about new work: %s", exc)

    def step(self) -> None:
        raw: Any = None
        try:
            raw = self.db.engine.raw_connection()
            conn = raw.driver_connection
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
            self._listening.set()
            while not self.stopping:
                for note in conn.notifies(timeout=STOP_CHECK_S):
                    if note.payload != self.me:
                        self.wake_here()
        except Exception as exc:  # a database that went away: expected, no traceback
            if not self.stopping:
                log.warning("listening for other servers' wake-ups failed (%s); retrying", exc)
        finally:
            if raw is not None:
                try:
                    raw.invalidate()  # never hand a LISTENing connection back to the pool
                except Exception:
                    log.debug("closing the listening connection failed", exc_info=True)
