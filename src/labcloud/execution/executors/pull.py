"""The pull executor: jobs wait in the database until a remote worker claims them over HTTP.

Nothing is dispatched to it (no scheduler): a worker's claim is what admits a job
(:func:`labcloud.services.claims.claim`: atomic, leased, a new attempt), and a claim that finds nothing
waits on the server's waker, which every new job wakes. Its duty on the leader is the lease watch: a job
whose worker went quiet (or whose runner, started by Slurm or Celery, did) is queued again or failed.
"""

from __future__ import annotations

import logging
import uuid

from labcloud.db.models import Job
from labcloud.execution.executors.base import Executor
from labcloud.execution.loops import Loop
from labcloud.registry.spec_parts import Resources
from labcloud.services import claims, targets

log = logging.getLogger(__name__)


class PullExecutor(Executor):
    name = "pull"
    dispatched = False  # workers claim their jobs
    engines_on_workers = True  # and run container jobs on their own engines
    wait_reads_spec = True  # the labels and runtime a worker must have

    def duties(self) -> list[Loop]:
        return [Loop("leases", max(0.2, self.settings.lease_seconds / 10), self.expire_leases)]

    def expire_leases(self) -> None:
        """Take back the jobs whose worker stopped renewing its lease."""
        with self.db.session() as session:
            expired = claims.expire_leases(session)
        if expired:
            log.warning("%d job(s) lost their worker; queued again or failed", expired)
            self.notify()

    def max_resources(self) -> dict[str, float]:
        return {}  # a job waits for a worker it fits; nothing is refused at submit

    def fits_now(self, resources: Resources) -> bool:
        return False  # never started by a dispatcher: a worker's claim admits it

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        """Nothing to start: the worker that claimed the job runs it."""

    def cancel(self, job_id: uuid.UUID) -> None:
        """Nothing to do here: the worker learns of the cancel from its next heartbeat."""

    def recover(self) -> None:
        """Nothing to take up: workers keep running their jobs, and the lease watch takes back the jobs of
        the ones that went quiet meanwhile."""

    def wait_reason(self, job: Job) -> str:
        if job.targeted:
            with self.db.session() as session:
                named = targets.wait_reason(session, self.settings, job)
            if named:
                return named
        labels = (job.spec or {}).get("labels") or {}
        wanted = [f"{k}={v}" for k, v in sorted(labels.items())]
        if claims.is_container(job):
            wanted.insert(0, "a container engine")
        if wanted:
            return f"waiting for a worker with {', '.join(wanted)}"
        return "waiting for a worker"
