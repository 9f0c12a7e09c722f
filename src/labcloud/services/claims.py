"""Claims and leases: a pull worker takes the oldest queued job it can run, atomically, as the job's next
attempt, and holds it while heartbeats renew the lease; a lease that runs out gives the job back.

A claim moves one queued job to ``staging`` with one conditional update, so two workers can never both take
it; on PostgreSQL the candidates are also read ``FOR UPDATE SKIP LOCKED`` so concurrent claimers do not
queue behind each other. Every claim is a new attempt, named in the job token it comes with.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import FileEntry, Job, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, NotFound
from labcloud.services import files, job_logs, lifecycle
from labcloud.services.executor_refs import AttemptRef
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.services.job_tokens import held_job, issue_job_token
from labcloud.settings import Settings
from labcloud.storage.base import Storage

CANDIDATES = 32  # queued jobs looked at per claim
PULL = "pull"
_SQLITE_CLAIMS = threading.Lock()


def claim_turn(dialect: str) -> AbstractContextManager[Any]:
    """Hold around a claim's whole transaction. SQLite has one writer and no row locks: claims in one
    process take turns instead of racing for the same job and waiting on "database is locked"."""
    return _SQLITE_CLAIMS if dialect == "sqlite" else nullcontext()


@dataclass
class Claimed:
    job: Job
    token: str
    token_expires_at: datetime
    inputs: dict[str, dict[str, Any]]


def claim(
    session: Session,
    settings: Settings,
    storage: Storage,
    worker: Worker,
    free: dict[str, float],
    labels: dict[str, str],
) -> Claimed | None:
    """Take the oldest queued job this worker can run, or None."""
    if worker.state != WorkerState.ACTIVE:
        return None
    have = worker.labels  # what an admin registered; labels a worker claims for itself count for nothing
    stmt = (
        select(Job)
        .where(Job.state == JobState.QUEUED, Job.executor == PULL)
        .order_by(Job.id)
        .limit(CANDIDATES)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    for _ in range(3):  # look again when every fitting candidate went to a faster claimer
        candidates = list(session.scalars(stmt))
        candidates.sort(key=lambda j: j.previous_worker_id == worker.id)  # another worker's lost job first
        raced = False
        for job in candidates:
            if not job.resources.fits_in(free) or not _labels_match(job.spec.get("labels") or {}, have):
                continue
            try:
                hold(session, job, worker, utcnow() + timedelta(seconds=settings.lease_seconds))
            except Conflict:  # cancelled, or taken by a claimer that did not lock
                raced = True
                continue
            session.refresh(job)
            try:
                inputs = inputs_of(session, settings, storage, job)
            except InvalidInput as exc:
                lifecycle.transition(
                    session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=exc.detail
                )
                continue
            job.executor_ref = AttemptRef(
                log_base=job_logs.open_attempt(settings, job.id, job.attempts, worker.name)
            )
            token, expires = issue_job_token(settings, job, worker)
            return Claimed(job, token, expires, inputs)
        if not raced:
            return None
    return None


def hold(
    session: Session,
    job: Job,
    worker: Worker,
    lease_until: datetime,
    how: str = "on worker",
    next_attempt: bool = True,
) -> None:
    """A queued job becomes ``worker``'s, staging, leased until ``lease_until``; by default as its next
    attempt (an engine's job already is). Conflict if someone moved it first."""
    lifecycle.transition(
        session,
        job,
        JobState.STAGING,
        attempts=job.attempts + 1 if next_attempt else job.attempts,
        worker_id=worker.id,
        lease_expires_at=lease_until,
        message=f"{how} {worker.name}",
    )


def _labels_match(required: dict[str, str], have: dict[str, str]) -> bool:
    return all(have.get(k) == str(v) for k, v in required.items())


def inputs_of(session: Session, settings: Settings, storage: Storage, job: Job) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for slot, raw in job.inputs.items():
        entry = files.resolve_input(session, job.owner_id, raw, ["inputs", slot])
        items = []
        for rel, row in files.input_entries(session, job.owner_id, entry):
            url = storage.presigned_get(row.blob_key or "", row.name, settings.presign_expiry_s)
            items.append(
                {
                    "path": rel,
                    "size": row.size,
                    "sha256": row.sha256,
                    "url": url or f"/api/v1/worker/jobs/{job.id}/inputs/{row.id}",
                }
            )
        out[slot] = {"name": entry.name, "files": items}
    return out


def assignment(claimed: Claimed) -> dict[str, Any]:
    job = claimed.job
    return {
        "id": job.id,
        "attempt": job.attempts,
        "token": claimed.token,
        "token_expires_at": claimed.token_expires_at,
        "lease_expires_at": job.lease_expires_at,
        "app": job.app,
        "version": job.version,
        "entrypoint": job.entrypoint,
        "spec": job.spec,
        "params": job.params,
        "env": job.env,
        "resources": job.resources.model_dump(),
        "inputs": claimed.inputs,
    }


def input_file(session: Session, job: Job, file_id: uuid.UUID) -> FileEntry:
    """An input file of the job (by file id), for a worker staging it."""
    row = session.get(FileEntry, file_id)
    if row is None or row.owner_id != job.owner_id or row.kind != files.FILE:
        raise NotFound("No such input file.")
    for slot, raw in job.inputs.items():
        entry = files.resolve_input(session, job.owner_id, raw, ["inputs", slot])
        if row.path == entry.path or row.path.startswith(entry.path + "/"):
            return row
    raise NotFound("No such input file.")


def lose(session: Session, job: Job, why: str) -> bool:
    job.previous_worker_id = job.worker_id
    return lifecycle.end_without_report(session, job, FailureReason.WORKER_LOST, why)


def expire_leases(session: Session, now: datetime | None = None) -> int:
    """Jobs whose worker (or runner) stopped renewing: queued again while attempts remain, else failed."""
    now = now or utcnow()
    stmt = select(Job).where(  # remote workers' jobs, and runners' that Slurm or Celery started
        Job.state.in_(list(ACTIVE)),
        Job.lease_expires_at < now,
    )
    lost = list(session.scalars(stmt))
    return sum(lose(session, job, "its worker stopped answering (lease expired)") for job in lost)


def heartbeat_interval(settings: Settings) -> float:
    return max(0.2, min(10.0, settings.lease_seconds / 4))


def job_heartbeat(session: Session, settings: Settings, credential: str, job_id: uuid.UUID) -> dict[str, Any]:
    """A runner's job is still running: renew its lease; whether to cancel it."""
    job, _ = held_job(session, settings, credential, job_id)
    job.lease_expires_at = utcnow() + timedelta(seconds=settings.lease_seconds)
    return {
        "cancel": job.state == JobState.CANCELLING,
        "lease_seconds": settings.lease_seconds,
        "heartbeat_interval_s": heartbeat_interval(settings),
    }
