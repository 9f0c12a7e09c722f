"""Leader election: of several ``labcloud serve`` processes sharing one database, exactly one dispatches.

Every replica serves the API; only the leader runs the scheduler, the lease watch and housekeeping. On
PostgreSQL the leader is the process holding a session-level advisory lock on a connection of its own:
when that process dies, its connection closes, the server drops the lock, and another replica takes it
at its next try (``leader_check_interval_s``). On SQLite, where replicas can only share a machine, the
lock is an exclusive ``flock`` on a file next to the database, released by the kernel in the same way.

A leader checks its hold every interval; if its connection fails it steps down at once (it can no longer
be sure nobody else leads) and competes again once the database answers.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from labcloud.db.engine import Database
from labcloud.execution.loops import Loop

log = logging.getLogger(__name__)

# The advisory lock's key: any 64-bit number no other application on the database uses.
LOCK_KEY = 0x6C61_6263_6C64  # "labcld"


class Leadership(Loop):
    """Calls ``lead`` when this process becomes the leader and ``step_down`` when it stops being one."""

    def __init__(
        self,
        db: Database,
        lock_file: Path,
        lead: Callable[[], None],
        step_down: Callable[[], None],
        interval_s: float = 2.0,
    ) -> None:
        super().__init__("leader", interval_s)
        self.db = db
        self.lock_file = lock_file
        self.lead, self.step_down = lead, step_down
        self.on_postgres = db.engine.dialect.name == "postgresql"
        self.is_leader = False
        self._hold: Any = None  # the connection (PostgreSQL) or the open file (SQLite) holding the lock

    def start(self) -> None:
        """Try once now (a single server leads from its first moment), then keep trying in a thread."""
        self.step()
        super().start()

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        if self.is_leader:
            self._resign("the server is stopping")

    def step(self) -> None:
        """Confirm the hold, or try for it."""
        try:
            if self.is_leader:
                self._confirm()
            elif self._acquire():
                self.is_leader = True
                log.info("this server leads: it dispatches jobs")
                self.lead()
        except Exception as exc:
            if self.is_leader:
                self._resign(f"lost the leader lock ({exc.__class__.__name__}: {exc})")
            else:
                self._release_hold()
                log.warning("could not try for leadership: %s", exc)

    # ------------------------------------------------------------------------------------------ the lock

    def _acquire(self) -> bool:
        if self.on_postgres:
            conn = self.db.engine.connect()
            try:
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
                conn.commit()
            except Exception:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._hold = conn
            return True
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_file, "a+")  # noqa: SIM115 - held open for as long as this process leads
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._hold = fh
        return True

    def _confirm(self) -> None:
        """Raise if the lock may have been lost (PostgreSQL: the connection holding it failed)."""
        if self.on_postgres:
            self._hold.execute(text("SELECT 1")).scalar()
            self._hold.commit()

    def _resign(self, why: str) -> None:
        self.is_leader = False
        log.warning("this server stops dispatching: %s", why)
        try:
            self.step_down()
        finally:
            self._release_hold()

    def _release_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        try:
            if self.on_postgres:
                hold.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                hold.commit()
        except Exception:
            hold.invalidate()  # a broken connection: closing it ends the session and its lock
        finally:
            hold.close()
