"""Handing jobs to engines (Slurm, Celery) and taking them back from there.

The Slurm and Celery executors hand a queued job to their engine with a job token (the engine's "worker" is
a row of its own that no one can log in as). Whatever runs it there (``labcloud run-job``, the Celery task)
first *takes* the job, which starts its lease, then reports like any worker and renews the lease with job
heartbeats. A second delivery of the same job (a broker redelivering it, Slurm requeueing it) can take it
only once the first runner's lease has run out, and then as a new attempt, which fences the old one.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labcloud.db.models import Job, Worker
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, LabcloudError
from labcloud.services import executor_refs, job_logs, lifecycle
from labcloud.services.claims import Claimed, hold, is_container, nothing_to_stage, staging
from labcloud.services.executor_refs import AttemptRef
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.services.job_tokens import Fenced, issue_job_token, token_job
from labcloud.settings import Settings
from labcloud.storage.base import Storage

ENGINE_TOKEN_PREFIX = "(engine)"  # the worker row of an executor's engine: its token is never shown
HANDOVER_TOKEN_DAYS = 30  # how long a job handed to Slurm or Celery may wait there to be taken

in_engine_queue = lifecycle.in_engine_queue


def engine_worker(session: Session, executor: str) -> Worker:
    """The worker row jobs handed to an engine are held by (created on first use)."""
    name = f"{executor} executor"
    worker = session.scalar(select(Worker).where(Worker.name == name))
    if worker is None:
        worker = Worker(
            name=name,
            labels={"executor": executor},
            token_hash=hashlib.sha256(
                secrets.token_urlsafe(32).encode()
            ).hexdigest(),  # nobody knows this token: no heartbeats, claims
            token_prefix=ENGINE_TOKEN_PREFIX,
            last_heartbeat_at=utcnow(),
        )
        session.add(worker)
        session.flush()
    return worker


def hand_over(session: Session, settings: Settings, job: Job, worker: Worker) -> None:
    """A queued job goes to ``worker``'s (an engine's) queue as its next attempt. It stays queued, with no
    lease, until a runner takes it. Conflict when the job was cancelled or handed over first."""
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == JobState.QUEUED, Job.worker_id.is_(None))
        .values(worker_id=worker.id, attempts=Job.attempts + 1, lease_expires_at=None)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"Job {job.id} was cancelled or handed over first.")
    session.refresh(job)
    job.executor_ref = AttemptRef(log_base=job_logs.open_attempt(settings, job.id, job.attempts, worker.name))


def handover_token(settings: Settings, job: Job, worker: Worker) -> str:
    """The job token an engine gets with the job. It may wait in the engine's queue for days: good until
    taken (the runner then gets a fresh one), fenced once the job moves to another attempt."""
    token, _ = issue_job_token(settings, job, worker, valid_s=HANDOVER_TOKEN_DAYS * 86400)
    return token


class Held(LabcloudError):
    """Another runner holds the job and its lease is still running: try again when it may have ended."""

    status, title, type_slug = 409, "Held by another runner", "held"


def take(
    session: Session,
    settings: Settings,
    storage: Storage,
    credential: str,
    job_id: uuid.UUID,
    *,
    start: bool = False,
) -> Claimed:
    """A runner an engine started asks for its job: the assignment, and the lease starts. ``start``: a job
    with nothing to stage runs from the take on, and the runner makes no start call for it."""
    job, worker, attempt = token_job(session, settings, credential, job_id)
    now = utcnow()
    lease = now + timedelta(seconds=settings.lease_seconds)
    state = JobState(job.state)
    if (
        job.worker_id != worker.id
        or job.attempts != attempt
        or (state not in ACTIVE and not in_engine_queue(job))
    ):
        raise Fenced(f"Job {job_id} is {job.state}; there is nothing to run.")
    if state == JobState.QUEUED:  # the first delivery: the lease starts
        try:
            hold(session, job, worker, lease, next_attempt=False)
        except Conflict:
            raise Fenced(f"Job {job_id} was cancelled or taken a moment ago.") from None
        session.refresh(job)
    elif job.lease_expires_at is not None and job.lease_expires_at > now:
        raise Held(
            f"Job {job_id} is held by another runner until {job.lease_expires_at.isoformat()}; "
            "ask again after that."
        )
    else:  # the runner that took it was lost: this delivery runs it again (as a new attempt) unless cancelled
        job.previous_worker_id = worker.id
        lifecycle.end_without_report(
            session, job, FailureReason.WORKER_LOST, "its runner stopped answering; delivered again"
        )
        if job.state == JobState.CANCELLED:
            raise Fenced(f"Job {job_id} was cancelled.")
        if job.state != JobState.QUEUED:
            raise Fenced(f"Job {job_id} has used all its attempts.")
        hold(session, job, worker, lease, "delivered again to")
        session.refresh(job)
        job.executor_ref = executor_refs.with_log_base(
            job.executor_ref, job_logs.open_attempt(settings, job.id, job.attempts, worker.name)
        )
    try:
        inputs, task = staging(session, settings, storage, job)
    except InvalidInput as exc:
        lifecycle.transition(
            session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=exc.detail
        )
        raise Fenced(exc.detail) from None
    token, expires = issue_job_token(settings, job, worker)
    if start and nothing_to_stage(inputs, task, is_container(job)):
        lifecycle.transition(session, job, JobState.RUNNING)
    return Claimed(job, token, expires, inputs, task)
