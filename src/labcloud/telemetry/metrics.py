"""What this process counts, for Prometheus.

Two kinds of numbers, and why:

- **Counted here** (counters, histograms): each replica counts what *it* did: the HTTP requests it answered,
  the uploads it stored, the jobs it dispatched, the leases it found expired, the job state changes it
  committed. Dashboards sum them over replicas (``sum(rate(...))``); a restarted replica starts again from
  zero, which ``rate()`` takes in its stride.
- **Read from the database when scraped** (:mod:`labcloud.telemetry.gauges`): jobs by state and executor,
  workers, storage used. Every replica reports the same value; dashboards take ``max()`` over replicas.

Queue wait and run time per app are observed at the state change rather than derived from the database.
Every change of a job's state is committed by a server process: API requests (submit, cancel) and the
reports of remote workers and of Slurm's and Celery's runners (over the worker API) land on whichever
replica they reach; dispatch, the local executor's runner (its supervisor processes only write a status
file that the server reads) and lease expiry run on the leader. So each change is observed once, by the
process that made it, and a sum over replicas is exact. (An admin command run from a shell that changes a
job is not scraped and is not counted.) Derived from the database, the histograms would take a scan of
every finished job at every scrape by every replica, or shrink when retention deletes jobs (which
Prometheus reads as a counter reset).

An observation counts only once its transaction commits (:func:`after_commit`): a state change in a
transaction that rolls back, or in a savepoint that does, is never counted.

One process per replica: ``labcloud serve`` hands uvicorn the application object, so uvicorn runs it in one
process (it cannot fork workers from an object); a site scales out with replicas, each scraped on its own.
prometheus-client's multiprocess mode (a shared folder of memory-mapped files) is therefore not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import event, func, or_, select
from sqlalchemy.orm import Session, SessionTransaction

from labcloud.db.models import Job, JobEvent
from labcloud.services.job_states import ACTIVE, TERMINAL, JobState

# Only labcloud's own metrics and this process's CPU, memory and file descriptors (not the default registry,
# which anything imported may fill).
REGISTRY = CollectorRegistry(auto_describe=True)
disable_created_metrics()  # (no *_created series: start times nobody graphs, a third more lines a scrape)
ProcessCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "labcloud_http_requests",
    "HTTP requests answered, by method, route template (/api/v1/jobs/{job_id}) and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "labcloud_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (a followed log: until it ends), by route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
    registry=REGISTRY,
)
UPLOADS = Counter(
    "labcloud_uploads",
    "Files uploaded by users and stored (any way: PUT, tus, direct to S3, form).",
    registry=REGISTRY,
)
UPLOAD_BYTES = Counter(
    "labcloud_upload_bytes", "Bytes of the files counted by labcloud_uploads.", registry=REGISTRY
)
DISPATCH_SECONDS = Histogram(
    "labcloud_dispatch_duration_seconds",
    "Dispatcher (leader): from taking a queued job to its executor having it (local start, sbatch, Celery "
    "send). Pull workers' claims are the worker API's requests.",
    ["executor"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LEASE_EXPIRIES = Counter(
    "labcloud_lease_expiries",
    "Jobs whose worker or runner stopped renewing its lease (queued again or failed as worker_lost).",
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "labcloud_job_queue_wait_seconds",
    "From a job entering the queue (submitted, or queued again after a lost worker) to an executor or "
    "worker taking it (staging), by app.",
    ["app"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "labcloud_job_run_seconds",
    "From a job's attempt starting to run to its end, by app and outcome (succeeded, failed, cancelled).",
    ["app", "outcome"],
    buckets=(1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
    registry=REGISTRY,
)

# --- observe once it commits ------------------------------------------------------------------------------

_PENDING = "labcloud.telemetry.pending"
Pending = list[tuple[SessionTransaction | None, Callable[[], None]]]


def after_commit(session: Session, observe: Callable[[], None]) -> None:
    """Call ``observe`` once the session's transaction commits; never if it (or the savepoint it was called
    in) rolls back."""
    pending: Pending = session.info.setdefault(_PENDING, [])
    pending.append((session.get_nested_transaction(), observe))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint was released (SQLAlchemy says "commit" for it too)
        _released(session)
        return
    pending: Pending | None = session.info.pop(_PENDING, None)
    for _, observe in pending or ():
        observe()


def _released(session: Session) -> None:
    """What was observed in the released savepoint now stands or falls with the transaction around it."""
    pending: Pending | None = session.info.get(_PENDING)
    released = session.get_nested_transaction()
    if not pending or released is None:
        return
    parent = released.parent
    around = parent if parent is not None and parent.nested else None
    session.info[_PENDING] = [(around if tx is released else tx, fn) for tx, fn in pending]


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    pending: Pending | None = session.info.get(_PENDING)
    if not pending:
        return
    if not previous.nested:  # the whole transaction: nothing of it happened
        session.info.pop(_PENDING, None)
        return
    session.info[_PENDING] = [(tx, fn) for tx, fn in pending if not _within(tx, previous)]


def _within(tx: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while tx is not None:
        if tx is savepoint:
            return True
        tx = tx.parent
    return False


# --- what is counted ----------------------------------------------------------------------------------------


def job_moved(
    session: Session, job: Job, current: JobState, target: JobState, now: datetime, attempts: int
) -> None:
    """A job's state change, observed into the wait and run histograms once it commits (``attempts``: the
    job's count before the change). Called by :func:`labcloud.services.lifecycle.transition`, which makes
    every change."""
    if current == JobState.QUEUED and target == JobState.STAGING:
        waited = (now - _queued_since(session, job, attempts)).total_seconds()
        app = job.app
        after_commit(session, lambda: QUEUE_WAIT.labels(app).observe(max(waited, 0.0)))
    elif target in TERMINAL and current in ACTIVE and job.started_at is not None:
        ran = (now - job.started_at).total_seconds()
        app, outcome = job.app, target.value
        after_commit(session, lambda: RUN_SECONDS.labels(app, outcome).observe(max(ran, 0.0)))


def _queued_since(session: Session, job: Job, attempts: int) -> datetime:
    """When the job last entered the queue: at submission before its first attempt, else when it was queued
    again (a Slurm or Celery job counts its attempt while still queued, so it is looked up too)."""
    if attempts == 0:
        return job.created_at
    since: Any = session.scalar(
        select(func.max(JobEvent.at)).where(
            JobEvent.job_id == job.id,
            JobEvent.to_state == JobState.QUEUED,
            or_(JobEvent.from_state.is_(None), JobEvent.from_state != JobState.QUEUED),
        )
    )
    return since if since is not None else job.created_at


def uploaded(sizes: list[int]) -> None:
    """Files a user uploaded were stored and indexed (committed)."""
    if sizes:
        UPLOADS.inc(len(sizes))
        UPLOAD_BYTES.inc(sum(sizes))


def leases_expired(session: Session, count: int) -> None:
    if count:
        after_commit(session, lambda: LEASE_EXPIRIES.inc(count))
