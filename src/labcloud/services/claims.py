"""Claims and leases: a pull worker takes the oldest queued job it can run, atomically, as the job's next
attempt, and holds it while heartbeats renew the lease; a lease that runs out gives the job back.

A claim moves one queued job to ``staging`` with one conditional update, so two workers can never both take
it; on PostgreSQL the candidates are also read ``FOR UPDATE SKIP LOCKED`` so concurrent claimers do not
queue behind each other. Every claim is a new attempt, named in the job token it comes with.

Container jobs (``runtime: container``) go only to workers whose heartbeats report a container engine, and
preferably to one that already has the job's image (a job never pulls: on Docker or Podman, a worker without
it fails the job as ``image_unavailable``). Workers report their images by reference (repository:tag), and
the spec's reference is what is matched (a rerun pinned to a content id too). Two rules:

- a worker takes the container jobs whose image it has before the other jobs it looks at;
- for :data:`IMAGE_AFFINITY_S` after a container job was queued, a worker without its image leaves it to
  any other live, active worker (heartbeat within a lease, the job's labels) that has it. After that, any
  worker with an engine may take it: a job never waits for ever behind a busy worker, and an engine that
  finds the image some other way gets its chance.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Job, JobInput, Worker, WorkerState
from labcloud.db.models.jobs import QUEUED_PULL
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, NotFound
from labcloud.protocol import FINISH_LOG
from labcloud.registry.spec_parts import Resources
from labcloud.services import job_inputs, job_logs, lifecycle, maintenance, targets, tes_run
from labcloud.services.executor_refs import AttemptRef
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.services.job_tokens import held_job, issue_job_token
from labcloud.settings import Settings
from labcloud.storage.base import Storage
from labcloud.telemetry import metrics

CANDIDATES = 32  # queued jobs looked at per claim
IMAGE_AFFINITY_S = 30.0  # a container job waits this long for a worker that has its image (see above)
PULL = "pull"
_SQLITE_CLAIMS = threading.Lock()
# The partial index's own condition, as literals: a prepared statement (PostgreSQL's generic plan) can use it.
_QUEUED_PULL = text(f"jobs.{QUEUED_PULL.replace(' AND ', ' AND jobs.')}")


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
    task: dict[str, Any] | None = None  # a GA4GH TES task's layout and inputs (services.tes_run)


def claim(
    session: Session,
    settings: Settings,
    storage: Storage,
    worker: Worker,
    free: dict[str, float],
    labels: dict[str, str],
    start: bool = False,
    most: int = 1,
) -> list[Claimed]:
    """Take the oldest queued jobs this worker can run, up to ``most`` that fit in ``free`` together, each
    as its own attempt with its own token; none in maintenance (workers finish what they hold and take
    nothing new). ``start``: a job with nothing to stage (no inputs, not a task, no container) runs from
    the claim on, and the worker makes no start call for it."""
    if worker.state != WorkerState.ACTIVE:
        return []
    if maintenance.current(session.get_bind().engine).enabled:
        return []
    have = worker.labels  # what an admin registered; labels a worker claims for itself count for nothing
    stmt = candidates_query(worker.id, session.get_bind().dialect.name)
    images = ImagePreference(session, settings, worker)
    room = dict(free)
    taken: list[Claimed] = []
    for _ in range(3):  # look again when every fitting candidate went to a faster claimer
        found = [Candidate(*row) for row in session.execute(stmt)]
        # another worker's lost job first, then the container jobs whose image this worker has
        found.sort(key=lambda c: (c.previous_worker_id == worker.id, not images.has(c)))
        raced = False
        for candidate in found:
            if len(taken) >= most:
                return taken
            if not candidate.resources.fits_in(room) or not _labels_match(candidate.labels or {}, have):
                continue
            if candidate.container and (not worker.engines or images.leave_to_others(candidate)):
                continue
            got = _take(session, settings, storage, worker, candidate, start)
            if isinstance(got, Claimed):
                taken.append(got)
                for key, need in candidate.resources.needs().items():
                    room[key] = float(room.get(key) or 0) - need
            else:
                raced = raced or got == "raced"
        if taken or not raced:
            return taken
    return taken


def _take(
    session: Session, settings: Settings, storage: Storage, worker: Worker, candidate: Candidate, start: bool
) -> Claimed | Literal["raced", "failed"]:
    """The candidate as ``worker``'s next attempt; "raced" when someone moved it first, "failed" when what
    it reads is gone (the job fails)."""
    job = session.get(Job, candidate.id, populate_existing=True)  # the one row taken, in full
    if job is None:
        return "raced"
    try:
        hold(session, job, worker, utcnow() + timedelta(seconds=settings.lease_seconds))
    except Conflict:  # cancelled, or taken by a claimer that did not lock
        return "raced"
    try:
        inputs, task = staging(session, settings, storage, job)
    except InvalidInput as exc:
        lifecycle.transition(
            session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=exc.detail
        )
        return "failed"
    job.executor_ref = AttemptRef(log_base=job_logs.open_attempt(settings, job.id, job.attempts, worker.name))
    token, expires = issue_job_token(settings, job, worker)
    if start and nothing_to_stage(inputs, task, candidate.container):
        lifecycle.transition(session, job, JobState.RUNNING)
    return Claimed(job, token, expires, inputs, task)


def nothing_to_stage(inputs: object, task: object, container: bool) -> bool:
    """A job a runner can start at once, when it asked to: no inputs to fetch, not a task, no image."""
    return not inputs and task is None and not container


@dataclass(frozen=True)
class Candidate:
    """What a claim reads of a queued job to decide whether to take it: a few narrow columns, no ORM
    object (only the job taken is loaded in full)."""

    id: uuid.UUID
    resources: Resources
    labels: dict[str, Any] | None
    runtime: str | None
    image: str | None
    previous_worker_id: uuid.UUID | None
    updated_at: datetime

    @property
    def container(self) -> bool:
        return self.runtime == "container"


def candidates_query(worker_id: uuid.UUID, dialect: str) -> Select[Any]:
    """The oldest queued pull jobs ``worker_id`` may take, as :class:`Candidate` rows. On PostgreSQL they
    are locked ``FOR UPDATE SKIP LOCKED``: concurrent claimers each see other rows instead of waiting."""
    stmt = (
        select(
            Job.id,
            Job.resources,
            Job.spec["labels"],
            Job.spec["runtime"].as_string(),
            Job.spec["image"].as_string(),
            Job.previous_worker_id,
            Job.updated_at,
        )
        .where(_QUEUED_PULL, targets.claimable_by(worker_id))  # ix_jobs_queued_pull: in id order
        .order_by(Job.id)
        .limit(CANDIDATES)
    )
    if dialect == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


def any_queued(db: Database) -> bool:
    """Whether any job waits for a pull worker (one indexed look)."""
    with db.session() as session:
        found = session.execute(
            select(Job.id).where(Job.state == JobState.QUEUED, Job.executor == PULL).limit(1)
        ).first()
    return found is not None


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


def is_container(job: Job) -> bool:
    return (job.spec or {}).get("runtime") == "container"


def image_key(reference: str) -> str:
    """An image reference as engines list their local images: ``docker.io/library/busybox``,
    ``docker.io/busybox`` and ``busybox`` are one, Podman's ``localhost/`` (images made on the machine) is
    dropped, and no tag means ``latest``."""
    ref = reference.strip()
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        ref += ":latest"
    return ref


def worker_images(worker: Worker) -> set[str]:
    """The images a worker's last heartbeat reported, by :func:`image_key` (by digest too, where reported)."""
    found: set[str] = set()
    for engine in worker.engines or []:
        found.update(image_key(str(ref)) for ref in engine.get("images") or [])
        found.update(image_key(str(ref)) for ref in engine.get("image_ids") or {})
    return found


class ImagePreference:
    """For one claim: which container jobs the claiming worker has the image of, and which it leaves to
    another live worker that has it (the rules in this module's docstring)."""

    def __init__(self, session: Session, settings: Settings, worker: Worker) -> None:
        self.session = session
        self.settings = settings
        self.worker = worker
        self.mine = worker_images(worker)
        self.now = utcnow()
        self._others: list[tuple[dict[str, str], set[str]]] | None = None

    def has(self, job: Candidate) -> bool:
        return job.container and image_key(job.image or "") in self.mine

    def leave_to_others(self, job: Candidate) -> bool:
        if self.has(job) or self.now - job.updated_at > timedelta(seconds=IMAGE_AFFINITY_S):
            return False
        wanted = image_key(job.image or "")
        required = job.labels or {}
        return any(wanted in images and _labels_match(required, labels) for labels, images in self._live())

    def _live(self) -> list[tuple[dict[str, str], set[str]]]:
        """(labels, images) of the other active workers that heartbeat and have an engine."""
        if self._others is None:
            since = self.now - timedelta(seconds=self.settings.lease_seconds)
            rows = self.session.scalars(
                select(Worker).where(
                    Worker.state == WorkerState.ACTIVE,
                    Worker.id != self.worker.id,
                    Worker.last_heartbeat_at >= since,
                )
            )
            self._others = [(w.labels, worker_images(w)) for w in rows if w.engines]
        return self._others


def staging(
    session: Session, settings: Settings, storage: Storage, job: Job
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """What a runner stages: the inputs of a job, by slot, and a task's layout and inputs (or None).
    InvalidInput when a file it reads is gone."""
    return inputs_of(session, settings, storage, job), tes_run.remote_task(session, settings, storage, job)


def inputs_of(session: Session, settings: Settings, storage: Storage, job: Job) -> dict[str, dict[str, Any]]:
    """Each input's name and files: the content pinned when the job was submitted."""
    out: dict[str, dict[str, Any]] = {}
    for slot, staged in job_inputs.for_staging(session, job).items():
        items = []
        for row in staged.files:
            url = storage.presigned_get(row.blob_key, row.name, settings.presign_expiry_s)
            items.append(
                {
                    "path": row.rel,
                    "size": row.size,
                    "sha256": row.sha256,
                    "url": url or f"/api/v1/worker/jobs/{job.id}/pinned/{row.id}",
                }
            )
        out[slot] = {"name": staged.name, "files": items}
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
        "task": claimed.task,
        "image": job.image,  # a rerun's container image, by content id: it runs the same
        "state": str(job.state),  # running: started with the claim (no start call follows)
        "features": [FINISH_LOG],  # what this server takes beyond the first protocol
    }


def input_file(session: Session, job: Job, file_id: uuid.UUID) -> FileEntry:
    """A file of the owner's space a task's input brings (by file id), for a worker staging it."""
    row = tes_run.input_file(session, job, file_id)
    if row is None:
        raise NotFound("No such input file.")
    return row


def pinned_input(session: Session, job: Job, pin_id: int) -> JobInput:
    """The content one of the job's inputs was pinned to (by its id), for a worker staging it."""
    row = session.get(JobInput, pin_id)
    if row is None or row.job_id != job.id:
        raise NotFound("No such input file.")
    return row


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
    expired = sum(lose(session, job, "its worker stopped answering (lease expired)") for job in lost)
    metrics.leases_expired(session, expired)
    return expired


def heartbeat_interval(settings: Settings) -> float:
    return max(0.2, min(10.0, settings.lease_seconds / 4))


def active_attempts(session: Session, attempts: list[tuple[uuid.UUID, int]]) -> list[tuple[uuid.UUID, int]]:
    """Which of these (job, attempt) pairs are their job's current attempt while it is active: a worker
    sweeping its engine keeps their containers (whoever runs them) and removes the others'."""
    ids = list({job_id for job_id, _ in attempts})
    if not ids:
        return []
    rows = session.execute(select(Job.id, Job.attempts).where(Job.id.in_(ids), Job.state.in_(list(ACTIVE))))
    current = {job_id: attempt for job_id, attempt in rows}
    return [(job_id, attempt) for job_id, attempt in attempts if current.get(job_id) == attempt]


def job_heartbeat(session: Session, settings: Settings, credential: str, job_id: uuid.UUID) -> dict[str, Any]:
    """A runner's job is still running: renew its lease; whether to cancel it."""
    job, _ = held_job(session, settings, credential, job_id)
    job.lease_expires_at = utcnow() + timedelta(seconds=settings.lease_seconds)
    return {
        "cancel": job.state == JobState.CANCELLING,
        "lease_seconds": settings.lease_seconds,
        "heartbeat_interval_s": heartbeat_interval(settings),
    }
