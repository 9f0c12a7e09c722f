"""The dispatcher: takes queued jobs, fairly across users, and hands each to the executor.

Fairness: each round offers every user with queued work their oldest job, users with the fewest running
jobs first and, among those, the one served longest ago; rounds repeat while jobs still fit. One user's
thousand jobs therefore never starve another user's one.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from sqlalchemy import select

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.errors import Conflict
from labcloud.execution.executors.base import Executor
from labcloud.services.job_states import JobState

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, db: Database, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self.executor: Executor | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_served: dict[uuid.UUID, float] = {}

    def attach(self, executor: Executor) -> None:
        self.executor = executor

    def notify(self) -> None:
        """Something changed (a job queued or ended): dispatch now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        assert self.executor is not None
        self.executor.recover()
        self.executor.start()
        self._thread = threading.Thread(target=self._loop, name="labcloud-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.executor is not None:
            self.executor.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.dispatch()
            except Exception:
                log.exception("dispatch round failed; retrying")

    def dispatch(self) -> int:
        """Start as many queued jobs as fit; return how many were started."""
        assert self.executor is not None
        started = 0
        while True:
            started_this_round = 0
            for owner_id, job_id in self._candidates():
                if self._stop.is_set():
                    return started
                if self._claim(job_id, owner_id):
                    started_this_round += 1
            started += started_this_round
            if not started_this_round:
                return started

    def _candidates(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        assert self.executor is not None
        queued = (
            (Job.state == JobState.QUEUED)
            & (Job.executor == self.executor.name)
            & Job.worker_id.is_(None)  # not yet handed to an engine's own queue
        )
        with self.db.session() as session:
            owners = session.scalars(select(Job.owner_id).where(queued).distinct()).all()
            # Each user's oldest queued job: one index lookup per user (PostgreSQL has no min() of uuid).
            rows: list[tuple[uuid.UUID, uuid.UUID]] = []
            for owner in owners:
                oldest = select(Job.id).where(queued, Job.owner_id == owner).order_by(Job.id).limit(1)
                job_id = session.scalar(oldest)
                if job_id is not None:
                    rows.append((owner, job_id))
        running = self.executor.running_per_owner()
        # Fewest running first; among equals, the user served longest ago (round robin); then the oldest job.
        return sorted(
            rows,
            key=lambda r: (running.get(r[0], 0), self._last_served.get(r[0], 0.0), r[1]),
        )

    def _claim(self, job_id: uuid.UUID, owner_id: uuid.UUID) -> bool:
        assert self.executor is not None
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED or not self.executor.fits_now(job.resources):
                return False
            try:
                self.executor.admit(session, job)
            except Conflict:  # cancelled (or taken) between our read and our write
                return False
            resources = job.resources
        self._last_served[owner_id] = time.monotonic()
        self.executor.submit(job_id, owner_id, resources)
        return True
