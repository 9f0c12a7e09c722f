"""Jobs that must run on named workers: an instrument, or one of a chosen set of them.

A targeted job (``Job.targeted``) lists the workers that may take it in ``job_targets``; a claim by any
other worker passes it by (:func:`claimable_by`, part of the claim's query, so a worker finds its own jobs
however many others wait). Labels and resources still have to fit.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session

from labcloud.db.models import Job, JobTarget, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.services.job_states import ACTIVE
from labcloud.settings import Settings

MAX_TARGETS = 100


def resolve(session: Session, names: list[str], loc: list[str | int]) -> tuple[list[Worker], list[dict]]:
    """The workers ``names`` names, and a problem for each that is unknown or revoked."""
    problems: list[dict] = []
    if len(names) > MAX_TARGETS:
        return [], [{"loc": loc, "msg": f"name at most {MAX_TARGETS} workers"}]
    wanted = list(dict.fromkeys(n.strip() for n in names))
    found = {w.name: w for w in session.scalars(select(Worker).where(Worker.name.in_(wanted)))}
    workers = []
    for i, name in enumerate(wanted):
        worker = found.get(name)
        if worker is None:
            problems.append({"loc": [*loc, i], "msg": f"there is no worker named {name!r}"})
        elif worker.state == WorkerState.REVOKED:
            problems.append({"loc": [*loc, i], "msg": f"worker {name!r} was revoked"})
        else:
            workers.append(worker)
    return workers, problems


def attach(session: Session, job: Job, workers: list[Worker]) -> None:
    """Let only ``workers`` take ``job`` (just queued)."""
    if not workers:
        return
    job.targeted = True
    session.add_all(JobTarget(job_id=job.id, worker_id=w.id) for w in workers)
    session.flush()


def claimable_by(worker_id: uuid.UUID) -> ColumnElement[bool]:
    """The claim query's condition: the job is for any worker, or names this one."""
    named = exists().where(JobTarget.job_id == Job.id, JobTarget.worker_id == worker_id)
    return or_(Job.targeted.is_(False), named)


def workers_of(session: Session, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The names of the workers each targeted job may run on."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobTarget.job_id, Worker.name)
        .join(Worker, Worker.id == JobTarget.worker_id)
        .where(JobTarget.job_id.in_(job_ids))
        .order_by(Worker.name)
    )
    out: dict[uuid.UUID, list[str]] = {}
    for job_id, name in rows:
        out.setdefault(job_id, []).append(name)
    return out


def busy_with(
    session: Session, worker_ids: list[uuid.UUID], but: uuid.UUID | None = None
) -> dict[uuid.UUID, Job]:
    """For each worker, the oldest job it holds or that waits for it alone, of another group than ``but``
    (what a new job for it would queue behind)."""
    if not worker_ids:
        return {}
    stmt = (
        select(JobTarget.worker_id, Job)
        .join(Job, Job.id == JobTarget.job_id)
        .where(JobTarget.worker_id.in_(worker_ids), Job.state.in_([*ACTIVE, "queued"]))
        .order_by(Job.id)
    )
    if but is not None:
        stmt = stmt.where(or_(Job.group_id.is_(None), Job.group_id != but))
    out: dict[uuid.UUID, Job] = {}
    for worker_id, job in session.execute(stmt):
        out.setdefault(worker_id, job)
    held = select(Job).where(Job.worker_id.in_(worker_ids), Job.state.in_(list(ACTIVE)))
    if but is not None:
        held = held.where(or_(Job.group_id.is_(None), Job.group_id != but))
    for job in session.scalars(held.order_by(Job.id)):
        if job.worker_id is not None:
            out.setdefault(job.worker_id, job)
    return out


def wait_reason(session: Session, settings: Settings, job: Job) -> str | None:
    """Why a targeted queued job waits, in words: which worker, and whether it is down or busy."""
    if not job.targeted:
        return None
    rows = session.execute(
        select(Worker).join(JobTarget, JobTarget.worker_id == Worker.id).where(JobTarget.job_id == job.id)
    ).scalars()
    workers = sorted(rows, key=lambda w: w.name)
    if not workers:
        return "waiting for a worker it names, which is gone"
    since = utcnow() - timedelta(seconds=settings.lease_seconds)
    words = []
    for worker in workers:
        if worker.state == WorkerState.REVOKED:
            words.append(f"{worker.name} (revoked)")
        elif worker.last_heartbeat_at is None or worker.last_heartbeat_at < since:
            words.append(f"{worker.name} (down)")
        elif worker.state == WorkerState.DRAINING:
            words.append(f"{worker.name} (draining)")
        else:
            words.append(worker.name)
    which = words[0] if len(words) == 1 else "one of " + ", ".join(words)
    return f"waiting for worker {which}"
