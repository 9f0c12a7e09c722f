"""Waiting claims: what hundreds of idle workers' long polls cost a server, kept to one small query every few
seconds for all of them together.

A claim that finds nothing waits on the process's :class:`~labcloud.execution.wakeups.Waker` until a
wake-up (a submit, a job given back; also from another replica) or its deadline. A job can also become
claimable without a wake-up reaching this server (a wake-up lost while a replica restarted, a job left
queued that no worker could take then). One :class:`QueueWatch` per server looks for such work every
:data:`RECHECK_S` while claims wait, and wakes them only when a pull job waits: an idle fleet's claims sleep
until their deadline, rather than each waking every few seconds to look for itself.
"""

from __future__ import annotations

import threading
import time

from labcloud.db.engine import Database
from labcloud.execution.loops import Loop
from labcloud.execution.wakeups import Waker
from labcloud.services import claims

RECHECK_S = 5.0


class QueueWatch(Loop):
    """Whether any pull job waits, looked up at most once per wake-up generation and :data:`RECHECK_S` for
    every claim of this server; and, as a loop, the one recheck for all the claims waiting here."""

    def __init__(self, db: Database, waker: Waker) -> None:
        super().__init__("claim-recheck", RECHECK_S)
        self.db = db
        self.waker = waker
        self._lock = threading.Lock()
        self._seen: tuple[int, float, bool] = (-1, 0.0, True)  # generation, when, whether any waited

    def known_idle(self, generation: int) -> bool | None:
        """Whether no job waits, if looked up lately (no I/O: for the event loop); None: look again."""
        with self._lock:
            seen_generation, at, waiting = self._seen
        if seen_generation == generation and time.monotonic() - at < RECHECK_S:
            return not waiting
        return None

    def idle(self, generation: int) -> bool:
        """Whether no job waits (a query, unless looked up lately): in a thread."""
        known = self.known_idle(generation)
        if known is not None:
            return known
        return not self._look(generation)

    def step(self) -> None:
        if not self.waker.waiting:
            return  # no claim waits here: nobody to wake
        if self._look(self.waker.generation):
            self.waker.notify()  # they look again (with what was just seen, for the new generation)
            with self._lock:
                self._seen = (self.waker.generation, self._seen[1], True)

    def _look(self, generation: int) -> bool:
        waiting = claims.any_queued(self.db)
        with self._lock:
            self._seen = (generation, time.monotonic(), waiting)
        return waiting
