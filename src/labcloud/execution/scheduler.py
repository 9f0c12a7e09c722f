"""The dispatcher: takes queued jobs, fairly across users, and hands each to the executor.

Fairness: each round offers every user with queued work their oldest job, users with the fewest running
jobs first; rounds repeat while jobs still fit. One user's thousand jobs therefore never starve another
user's one.
"""

from __future__ import annotations

import logging
import threading
import uuid

from sqlalchemy import func, select

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.errors import Conflict
from labcloud.execution.executors.base import Executor
from labcloud.services import jobs as job_service
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

    def attach(self, executor: Executor) -> None:
        self.executor = executor

    def notify(self) -> None:
        """Something changed (a job queued or ended): dispatch now rather than at the next interval."""
        self._wake.set()

    def start(self) -> None:
        assert self.executor is not None
        self.executor.recover()
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
        with self.db.session() as session:
            rows = session.execute(
                select(Job.owner_id, func.min(Job.id))
                .where(Job.state == JobState.QUEUED.value)
                .group_by(Job.owner_id)
            ).all()
        running = self.executor.running_per_owner()
        return sorted(((r[0], r[1]) for r in rows), key=lambda r: (running.get(r[0], 0), r[1]))

    def _claim(self, job_id: uuid.UUID, owner_id: uuid.UUID) -> bool:
        assert self.executor is not None
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED.value or not self.executor.fits_now(job.resources):
                return False
            try:
                job_service.transition(
                    session, job, JobState.STAGING, attempts=job.attempts + 1, executor=self.executor.name
                )
            except Conflict:  # cancelled (or taken) between our read and our write
                return False
            resources = dict(job.resources)
        self.executor.submit(job_id, owner_id, resources)
        return True
