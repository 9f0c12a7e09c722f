"""The pull executor: jobs wait in the database until a remote worker claims them over HTTP.

Nothing is pushed: the server wakes long-polling claims when work arrives and takes jobs back from
workers whose lease ran out. The claim itself and the leases are in :mod:`labcloud.services.workers`.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.execution.loops import Loop
from labcloud.services import workers
from labcloud.settings import Settings

log = logging.getLogger(__name__)


class Waker:
    """Wakes coroutines waiting (on any event loop) for new work; a generation count closes the gap
    between looking for work and starting to wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self.generation = 0

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


class PullExecutor:
    name = "pull"
    settings_model = None  # no settings of its own

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings, self.db = settings, db
        self.waker = Waker()
        self.leases = Loop("leases", max(0.2, settings.lease_seconds / 10), self.expire_leases)

    def notify(self) -> None:
        self.waker.notify()

    def wait_reason(self, job: Job) -> str:
        labels = (job.spec or {}).get("labels") or {}
        if labels:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return f"waiting for a worker with {wanted}"
        return "waiting for a worker"

    def start(self) -> None:
        """Watch leases: a job whose worker went quiet is taken back."""
        self.leases.start()

    def stop(self) -> None:
        self.leases.stop()

    def expire_leases(self) -> None:
        with self.db.session() as session:
            expired = workers.expire_leases(session)
        if expired:
            log.warning("%d job(s) lost their worker; queued again or failed", expired)
            self.notify()
