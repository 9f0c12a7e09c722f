"""Accounting: every attempt of a job that ends writes one usage record (project, user, app, version,
executor, CPU- and GPU-hours, peak memory, wall time), never changed afterwards, and charges its project's
time quotas; reports sum the records per project, user, app, executor or month, as JSON rows or CSV.

CPU-hours are the wall time x the CPUs the job asked for (as Slurm bills: what was held, not what was
busy); GPU-hours likewise.
"""

from __future__ import annotations

import csv
import io
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import Job, Project, UsageRecord, User, Worker
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput
from labcloud.services import quotas
from labcloud.services.executor_refs import CeleryRef, SlurmRef

GROUPS = ("project", "user", "app", "executor", "month")
COLUMNS = ("attempts", "cpu_hours", "gpu_hours", "wall_hours", "peak_memory_mb")


def where_it_ran(session: Session, job: Job) -> str:
    """Where the job's current (or last) attempt runs, in words."""
    ref = job.executor_ref
    if isinstance(ref, SlurmRef):
        return f"Slurm job {ref.engine_id}"
    if isinstance(ref, CeleryRef):
        return f"Celery task {ref.engine_id}"
    if job.worker_id is not None:
        worker = session.get(Worker, job.worker_id)
        return f"worker {worker.name}" if worker is not None else "a worker since removed"
    if job.executor == "local":
        return f"this server ({socket.gethostname()})"
    return job.executor


def attempts(session: Session, job: Job) -> list[UsageRecord]:
    """The job's ended attempts, first first."""
    return list(
        session.scalars(select(UsageRecord).where(UsageRecord.job_id == job.id).order_by(UsageRecord.attempt))
    )


def attempt_ended(session: Session, job: Job, state: str, changes: dict[str, Any]) -> UsageRecord | None:
    """Write the usage record of the attempt that just ended (the job entered ``state``), and charge its
    project's time quotas. Nothing for a job that never started an attempt."""
    if job.attempts <= 0:
        return None
    now = utcnow()
    usage = changes.get("usage") if isinstance(changes.get("usage"), dict) else None
    if usage is not None and usage.get("wall_s") is not None:
        wall = float(usage.get("wall_s") or 0.0)
    elif job.started_at is not None:  # ended without a report: as long as it was held
        wall = max((now - job.started_at).total_seconds(), 0.0)
    else:
        wall = 0.0
    cpus, gpus = float(job.resources.cpus), float(job.resources.gpus)
    record = UsageRecord(
        job_id=job.id,
        attempt=job.attempts,
        ran_on=where_it_ran(session, job)[:200],
        project_id=job.project_id,
        user_id=job.owner_id,
        app=job.app,
        version=job.version,
        executor=job.executor,
        state=state,
        cpus=cpus,
        gpus=gpus,
        wall_s=round(wall, 3),
        cpu_hours=wall * cpus / 3600,
        gpu_hours=wall * gpus / 3600,
        peak_memory_mb=float((usage or {}).get("peak_memory_mb") or 0.0),
        started_at=job.started_at,
        finished_at=now,
    )
    session.add(record)
    quotas.charge(session, job.project_id, record.cpu_hours, record.gpu_hours)
    return record


def decayed_usage(
    session: Session, project_ids: list[uuid.UUID], half_life_h: float, now: datetime | None = None
) -> dict[uuid.UUID, float]:
    """Each project's CPU-hours, every record weighed by half for each ``half_life_h`` since it ended (as
    Slurm's fair share decays usage): what it used lately counts most. Records older than ten half-lives
    weigh less than a thousandth and are left out."""
    if not project_ids or half_life_h <= 0:
        return {}
    now = now or utcnow()
    since = now - timedelta(hours=10 * half_life_h)
    rows = session.execute(
        select(UsageRecord.project_id, UsageRecord.cpu_hours, UsageRecord.finished_at).where(
            UsageRecord.project_id.in_(set(project_ids)), UsageRecord.finished_at >= since
        )
    )
    found: dict[uuid.UUID, float] = defaultdict(float)
    for project_id, cpu_hours, finished_at in rows:
        age_h = max((now - finished_at).total_seconds() / 3600, 0.0)
        found[project_id] += cpu_hours * 0.5 ** (age_h / half_life_h)
    return dict(found)


@dataclass
class Report:
    group_by: str
    rows: list[dict[str, Any]]

    def csv(self) -> str:
        """The rows as CSV; a name a spreadsheet would run as a formula (=, +, -, @ first) is quoted
        with a leading apostrophe."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([self.group_by, *COLUMNS])
        for row in self.rows:
            writer.writerow([_cell(str(row[self.group_by])), *(row[c] for c in COLUMNS)])
        return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report(
    session: Session,
    group_by: str,
    *,
    project_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """The usage records (of one project, or all) finished in [since, until), summed per ``group_by``;
    biggest CPU-hours first (months in order)."""
    if group_by not in GROUPS:
        raise InvalidInput.field(["query", "by"], f"one of {', '.join(GROUPS)}")
    stmt = select(UsageRecord)
    if project_id is not None:
        stmt = stmt.where(UsageRecord.project_id == project_id)
    if since is not None:
        stmt = stmt.where(UsageRecord.finished_at >= since)
    if until is not None:
        stmt = stmt.where(UsageRecord.finished_at < until)
    sums: dict[Any, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0.0))
    for record in session.scalars(stmt):
        key = _key(record, group_by)
        row = sums[key]
        row["attempts"] += 1
        row["cpu_hours"] += record.cpu_hours
        row["gpu_hours"] += record.gpu_hours
        row["wall_hours"] += record.wall_s / 3600
        row["peak_memory_mb"] = max(row["peak_memory_mb"], record.peak_memory_mb)
    names = _names(session, group_by, list(sums))
    ordered = sorted(
        sums.items(), key=lambda kv: str(kv[0]) if group_by == "month" else (-kv[1]["cpu_hours"], str(kv[0]))
    )
    rows: list[dict[str, Any]] = []
    for key, values in ordered:
        line: dict[str, Any] = {group_by: names.get(key, str(key))}
        line.update({c: round(v, 6) for c, v in values.items()})
        line["attempts"] = int(values["attempts"])
        rows.append(line)
    return Report(group_by, rows)


def _key(record: UsageRecord, group_by: str) -> Any:
    if group_by == "month":
        return record.finished_at.strftime("%Y-%m")
    return {
        "project": record.project_id,
        "user": record.user_id,
        "app": record.app,
        "executor": record.executor,
    }[group_by]


def _names(session: Session, group_by: str, keys: list[Any]) -> dict[Any, str]:
    """Readable names for ids: a project's slug, a user's e-mail."""
    if group_by == "project" and keys:
        return {
            i: slug
            for i, slug in session.execute(select(Project.id, Project.slug).where(Project.id.in_(keys)))
        }
    if group_by == "user" and keys:
        return {
            i: email for i, email in session.execute(select(User.id, User.email).where(User.id.in_(keys)))
        }
    return {}
