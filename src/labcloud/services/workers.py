"""Remote workers: registration, heartbeats, atomic claims with leases, and job-scoped tokens.

A claim moves one queued job to ``staging`` with one conditional update, so two workers can never both
take it; on PostgreSQL the candidates are also read ``FOR UPDATE SKIP LOCKED`` so concurrent claimers do
not queue behind each other. Every claim is a new attempt: the job token names the attempt, and a worker
whose attempt is no longer the job's current one is refused on every call (fenced).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import FileEntry, Job, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, LabcloudError, NotFound, Unauthorized
from labcloud.services import executor_refs, files, lifecycle
from labcloud.services import jobs as job_service
from labcloud.services.executor_refs import AttemptRef
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings
from labcloud.storage.base import Storage

WORKER_TOKEN_PREFIX = "lcw_"
JOB_TOKEN_PREFIX = "lcj_"
JOB_TOKEN_AUDIENCE = "labcloud-job"
CANDIDATES = 32  # queued jobs looked at per claim
ENGINE_TOKEN_PREFIX = "(engine)"  # the worker row of an executor's engine: its token is never shown
HANDOVER_TOKEN_DAYS = 30  # how long a job handed to Slurm or Celery may wait there to be taken
PULL = "pull"
_SQLITE_CLAIMS = threading.Lock()


def claim_turn(dialect: str) -> AbstractContextManager[Any]:
    """Hold around a claim's whole transaction. SQLite has one writer and no row locks: claims in one
    process take turns instead of racing for the same job and waiting on "database is locked"."""
    return _SQLITE_CLAIMS if dialect == "sqlite" else nullcontext()


class Fenced(LabcloudError):
    status, title, type_slug = 409, "No longer yours", "fenced"


# ------------------------------------------------------------------------------------------ registry


def register(session: Session, name: str, labels: dict[str, str]) -> tuple[Worker, str]:
    name = name.strip()
    if not name:
        raise InvalidInput.field(["body", "name"], "a worker needs a name")
    if session.scalar(select(Worker).where(Worker.name == name)) is not None:
        raise Conflict(f"A worker named '{name}' exists; pick another name or revoke it first.")
    secret = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    worker = Worker(
        name=name,
        labels=_check_labels(labels, ["body", "labels"]),
        token_hash=_digest(secret),
        token_prefix=secret[:12],
    )
    session.add(worker)
    session.flush()
    return worker, secret


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_labels(labels: dict[str, str], loc: list[str | int]) -> dict[str, str]:
    for key, value in labels.items():
        if not key or len(key) > 64 or len(str(value)) > 200:
            raise InvalidInput.field(loc, f"label '{key[:64]}': keys are 1-64 characters, values up to 200")
    return {str(k): str(v) for k, v in labels.items()}


def authenticate(session: Session, credential: str) -> Worker:
    if not credential.startswith(WORKER_TOKEN_PREFIX):
        raise Unauthorized("This needs a worker token (lcw_...).")
    worker = session.scalar(select(Worker).where(Worker.token_hash == _digest(credential)))
    if worker is None or worker.state == "revoked":
        raise Unauthorized("The worker token is unknown or was revoked.")
    return worker


def get(session: Session, worker_id: uuid.UUID) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"No worker {worker_id}.")
    return worker


def state_of(worker: Worker, settings: Settings, now: datetime | None = None) -> str:
    """active, draining, revoked, or lost (no heartbeat for longer than a lease)."""
    if worker.state == "revoked":
        return "revoked"
    if worker.token_prefix == ENGINE_TOKEN_PREFIX:  # Slurm's or Celery's: no heartbeats of its own
        return worker.state
    now = now or utcnow()
    seen = worker.last_heartbeat_at
    if seen is None or now - seen > timedelta(seconds=settings.lease_seconds):
        return "lost"
    return worker.state


def running_jobs(session: Session, worker_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    rows = session.execute(
        select(Job.worker_id, Job.id).where(Job.worker_id.in_(worker_ids), Job.state.in_(list(ACTIVE)))
    ).all()
    out: dict[uuid.UUID, list[uuid.UUID]] = {}
    for worker_id, job_id in rows:
        if worker_id is not None:
            out.setdefault(worker_id, []).append(job_id)
    return out


def list_workers(session: Session, *, limit: int, cursor: str | None) -> Page[Worker]:
    return paginate(session, select(Worker), Worker.id, limit=limit, cursor=cursor, newest_first=False)


def drain(session: Session, worker: Worker) -> Worker:
    if worker.state == "revoked":
        raise Conflict("This worker was revoked.")
    worker.state = WorkerState.DRAINING
    return worker


def revoke(session: Session, worker: Worker) -> Worker:
    """The token stops working at once; the worker's jobs are queued again (or failed) now."""
    worker.state = WorkerState.REVOKED
    worker.revoked_at = utcnow()
    for job in session.scalars(select(Job).where(Job.worker_id == worker.id, Job.state.in_(list(ACTIVE)))):
        _lose(session, job, "its worker's token was revoked")
    return worker


def _lose(session: Session, job: Job, why: str) -> bool:
    job.previous_worker_id = job.worker_id
    return lifecycle.end_without_report(session, job, FailureReason.WORKER_LOST, why)


# ------------------------------------------------------------------------------------------ heartbeats


def heartbeat(session: Session, settings: Settings, worker: Worker, body: dict[str, Any]) -> dict[str, Any]:
    now = utcnow()
    worker.last_heartbeat_at = now
    worker.capacity = dict(body.get("capacity") or {}) | {"free": dict(body.get("free") or {})}
    worker.telemetry = dict(body.get("telemetry") or {})
    worker.version = str(body.get("version") or "")[:64]
    held = {uuid.UUID(str(j["id"])): int(j["attempt"]) for j in body.get("jobs") or []}
    cancel, abort = [], []
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    jobs = session.scalars(select(Job).where(Job.id.in_(list(held)))).all() if held else []
    found = {job.id: job for job in jobs}
    for job_id, attempt in held.items():
        job = found.get(job_id)
        mine = (
            job is not None
            and job.worker_id == worker.id
            and job.attempts == attempt
            and JobState(job.state) in ACTIVE
        )
        if not mine:
            abort.append(job_id)
            continue
        assert job is not None
        job.lease_expires_at = lease_until
        if job.state == JobState.CANCELLING:
            cancel.append(job_id)
    return {
        "state": worker.state,
        "lease_seconds": settings.lease_seconds,
        "heartbeat_interval_s": heartbeat_interval(settings),
        "cancel": cancel,
        "abort": abort,
    }


def heartbeat_interval(settings: Settings) -> float:
    return max(0.2, min(10.0, settings.lease_seconds / 4))


def expire_leases(session: Session, now: datetime | None = None) -> int:
    """Jobs whose worker (or runner) stopped renewing: queued again while attempts remain, else failed."""
    now = now or utcnow()
    stmt = select(Job).where(  # remote workers' jobs, and runners' that Slurm or Celery started
        Job.state.in_(list(ACTIVE)),
        Job.lease_expires_at < now,
    )
    lost = list(session.scalars(stmt))
    return sum(_lose(session, job, "its worker stopped answering (lease expired)") for job in lost)


# ------------------------------------------------------------------------------------------ claims


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
    if worker.state != "active":
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
                _hold(session, job, worker, utcnow() + timedelta(seconds=settings.lease_seconds))
            except Conflict:  # cancelled, or taken by a claimer that did not lock
                raced = True
                continue
            session.refresh(job)
            try:
                inputs = _inputs(session, settings, storage, job)
            except InvalidInput as exc:
                lifecycle.transition(
                    session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=exc.detail
                )
                continue
            job.executor_ref = AttemptRef(log_base=_open_attempt_log(settings, job, worker))
            token, expires = issue_job_token(settings, job, worker)
            return Claimed(job, token, expires, inputs)
        if not raced:
            return None
    return None


def _hold(
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


def _open_attempt_log(settings: Settings, job: Job, worker: Worker) -> int:
    """Where this attempt's log starts in the job's log: a worker counts offsets from its own first byte,
    so a retry appends after the earlier attempts' lines instead of being refused as out of place."""
    path = job_service.log_path(settings, job.id)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "ab") as fh:
        fh.write(f"[labcloud] attempt {job.attempts} on worker {worker.name}\n".encode())
        return fh.tell()


def log_base(job: Job) -> int:
    """The byte of the job's log where the current attempt's log starts (see :func:`claim`)."""
    return executor_refs.log_base(job.executor_ref)


def _labels_match(required: dict[str, str], have: dict[str, str]) -> bool:
    return all(have.get(k) == str(v) for k, v in required.items())


def _inputs(session: Session, settings: Settings, storage: Storage, job: Job) -> dict[str, dict[str, Any]]:
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


# ------------------------------------------------------------------------------------------ job tokens


def issue_job_token(
    settings: Settings, job: Job, worker: Worker, valid_s: float | None = None
) -> tuple[str, datetime]:
    """A token for this job and attempt only; by default valid for its time limit plus a margin."""
    timeout = float(job.resources.timeout_s)
    expires = utcnow() + timedelta(seconds=valid_s or timeout + settings.lease_seconds + 3600)
    claims = {
        "sub": str(job.id),
        "wid": str(worker.id),
        "att": job.attempts,
        "aud": JOB_TOKEN_AUDIENCE,
        "exp": int(expires.timestamp()),
    }
    token = jwt.encode(claims, settings.signing_key, algorithm=security.JWT_ALGORITHM)
    return JOB_TOKEN_PREFIX + token, expires


def held_job(session: Session, settings: Settings, credential: str, job_id: uuid.UUID) -> tuple[Job, Worker]:
    """The job a job token was issued for, if its worker still holds that attempt; else 401 or 409."""
    job, worker, attempt = _token_job(session, settings, credential, job_id)
    if job.worker_id != worker.id or job.attempts != attempt or JobState(job.state) not in ACTIVE:
        raise Fenced(
            f"Job {job_id} is no longer held by this worker (attempt {attempt}; the job is at attempt "
            f"{job.attempts}, {job.state}). Stop it and report nothing more."
        )
    return job, worker


def _token_job(
    session: Session, settings: Settings, credential: str, job_id: uuid.UUID
) -> tuple[Job, Worker, int]:
    """The job, worker and attempt a valid job token names."""
    if not credential.startswith(JOB_TOKEN_PREFIX):
        raise Unauthorized("This needs the job token (lcj_...) given with the claim.")
    try:
        claims = jwt.decode(
            credential[len(JOB_TOKEN_PREFIX) :],
            settings.signing_key,
            algorithms=[security.JWT_ALGORITHM],
            audience=JOB_TOKEN_AUDIENCE,
            options={"require": ["exp", "sub"]},
        )
        token_job, worker_id, attempt = uuid.UUID(claims["sub"]), uuid.UUID(claims["wid"]), int(claims["att"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        raise Unauthorized("The job token is invalid or has expired.") from None
    if token_job != job_id:
        raise NotFound(f"No job {job_id} for this token.")
    worker = session.get(Worker, worker_id)
    if worker is None or worker.state == "revoked":
        raise Unauthorized("The worker token behind this job token was revoked.")
    job = session.get(Job, job_id)
    if job is None:
        raise Fenced(f"Job {job_id} no longer exists.")
    return job, worker, attempt


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


# ------------------------------------------------------------------------------ handing jobs to engines
#
# The Slurm and Celery executors hand a staging job to their engine with a job token (the engine's
# "worker" is a row of its own that no one can log in as). Whatever runs it there (``labcloud run-job``)
# first *takes* the job, which starts its lease, then reports like any worker and renews the lease with
# job heartbeats. A second delivery of the same job (a broker redelivering it, Slurm requeueing it) can
# take it only once the first runner's lease has run out, and then as a new attempt, which fences the old.


def engine_worker(session: Session, executor: str) -> Worker:
    """The worker row jobs handed to an engine are held by (created on first use)."""
    name = f"{executor} executor"
    worker = session.scalar(select(Worker).where(Worker.name == name))
    if worker is None:
        worker = Worker(
            name=name,
            labels={"executor": executor},
            token_hash=_digest(secrets.token_urlsafe(32)),  # nobody knows this token: no heartbeats, claims
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
    job.executor_ref = AttemptRef(log_base=_open_attempt_log(settings, job, worker))


def handover_token(settings: Settings, job: Job, worker: Worker) -> str:
    """The job token an engine gets with the job. It may wait in the engine's queue for days: good until
    taken (the runner then gets a fresh one), fenced once the job moves to another attempt."""
    token, _ = issue_job_token(settings, job, worker, valid_s=HANDOVER_TOKEN_DAYS * 86400)
    return token


in_engine_queue = lifecycle.in_engine_queue


class Held(LabcloudError):
    """Another runner holds the job and its lease is still running: try again when it may have ended."""

    status, title, type_slug = 409, "Held by another runner", "held"


def take(
    session: Session, settings: Settings, storage: Storage, credential: str, job_id: uuid.UUID
) -> Claimed:
    """A runner an engine started asks for its job: the assignment, and the lease starts."""
    job, worker, attempt = _token_job(session, settings, credential, job_id)
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
            _hold(session, job, worker, lease, next_attempt=False)
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
        _hold(session, job, worker, lease, "delivered again to")
        session.refresh(job)
        job.executor_ref = executor_refs.with_log_base(
            job.executor_ref, _open_attempt_log(settings, job, worker)
        )
    try:
        inputs = _inputs(session, settings, storage, job)
    except InvalidInput as exc:
        lifecycle.transition(
            session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=exc.detail
        )
        raise Fenced(exc.detail) from None
    token, expires = issue_job_token(settings, job, worker)
    return Claimed(job, token, expires, inputs)


def job_heartbeat(session: Session, settings: Settings, credential: str, job_id: uuid.UUID) -> dict[str, Any]:
    """A runner's job is still running: renew its lease; whether to cancel it."""
    job, _ = held_job(session, settings, credential, job_id)
    job.lease_expires_at = utcnow() + timedelta(seconds=settings.lease_seconds)
    return {
        "cancel": job.state == JobState.CANCELLING,
        "lease_seconds": settings.lease_seconds,
        "heartbeat_interval_s": heartbeat_interval(settings),
    }
