"""Job tokens: a short-lived credential for one job and one attempt, given to whoever runs it (a pull worker,
or the runner Slurm or Celery started). Every call with it is refused once the attempt is no longer the
job's current one: the runner is fenced off, whatever it still believes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import jwt
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import Job, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import LabcloudError, NotFound, Unauthorized
from labcloud.services.job_states import ACTIVE, JobState
from labcloud.settings import Settings

JOB_TOKEN_PREFIX = "lcj_"
JOB_TOKEN_AUDIENCE = "labcloud-job"


class Fenced(LabcloudError):
    status, title, type_slug = 409, "No longer yours", "fenced"


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
    job, worker, attempt = token_job(session, settings, credential, job_id)
    if job.worker_id != worker.id or job.attempts != attempt or JobState(job.state) not in ACTIVE:
        raise Fenced(
            f"Job {job_id} is no longer held by this worker (attempt {attempt}; the job is at attempt "
            f"{job.attempts}, {job.state}). Stop it and report nothing more."
        )
    return job, worker


def token_job(
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
    if worker is None or worker.state == WorkerState.REVOKED:
        raise Unauthorized("The worker token behind this job token was revoked.")
    job = session.get(Job, job_id)
    if job is None:
        raise Fenced(f"Job {job_id} no longer exists.")
    return job, worker, attempt
