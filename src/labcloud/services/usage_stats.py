"""Usage statistics for admins: per calendar month (UTC) the jobs submitted (per app), the active users
(those who submitted a job that month) and the CPU- and GPU-hours used (the usage records that accounting
keeps of every ended attempt, by the month the attempt ended); and the storage held, day by day, from the
sample of each day that the leader's housekeeping keeps up to date (:func:`sample`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Job, Project, UsageSample
from labcloud.db.types import utcnow
from labcloud.services import accounting

MAX_MONTHS = 120


@dataclass
class Month:
    month: str  # YYYY-MM
    jobs: int = 0
    jobs_by_app: dict[str, int] = field(default_factory=dict)
    active_users: int = 0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0


@dataclass
class StorageDay:
    day: date
    storage_bytes: int
    files: int


@dataclass
class Statistics:
    since: datetime
    months: list[Month]  # every month from ``since`` to this one, in order, empty ones too
    storage: list[StorageDay]  # the daily samples since then, in order


def month_start(months: int, now: datetime) -> datetime:
    """The first moment (UTC) of ``months`` calendar months ending with the current one."""
    index = now.year * 12 + (now.month - 1) - (months - 1)
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _month_labels(since: datetime, now: datetime) -> list[str]:
    first, last = since.year * 12 + since.month - 1, now.year * 12 + now.month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(first, last + 1)]


def _month_of(session: Session, column: InstrumentedAttribute[Any]) -> Any:
    """SQL for the UTC month (YYYY-MM) of a time column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.strftime("%Y-%m", column)  # SQLite keeps UTC times as text


def statistics(session: Session, months: int, now: datetime | None = None) -> Statistics:
    """The last ``months`` calendar months (this one included)."""
    now = now or utcnow()
    since = month_start(max(1, min(months, MAX_MONTHS)), now)
    table = {label: Month(label) for label in _month_labels(since, now)}
    month = _month_of(session, Job.created_at).label("month")
    submitted = select(month, Job.app, func.count()).where(Job.created_at >= since).group_by(month, Job.app)
    by_app: dict[str, dict[str, int]] = defaultdict(dict)
    for label, app, n in session.execute(submitted):
        by_app[label][app] = int(n)
    users = select(month, func.count(Job.owner_id.distinct())).where(Job.created_at >= since).group_by(month)
    active = {label: int(n) for label, n in session.execute(users)}
    used = {row["month"]: row for row in accounting.report(session, "month", since=since).rows}
    for label, row in table.items():
        row.jobs_by_app = dict(sorted(by_app.get(label, {}).items(), key=lambda kv: (-kv[1], kv[0])))
        row.jobs = sum(row.jobs_by_app.values())
        row.active_users = active.get(label, 0)
        row.cpu_hours = round(float(used.get(label, {}).get("cpu_hours", 0.0)), 6)
        row.gpu_hours = round(float(used.get(label, {}).get("gpu_hours", 0.0)), 6)
    samples = session.scalars(
        select(UsageSample).where(UsageSample.day >= since.date()).order_by(UsageSample.day)
    )
    storage = [StorageDay(s.day, s.storage_bytes, s.files) for s in samples]
    return Statistics(since, list(table.values()), storage)


def sample(db: Database, now: datetime | None = None) -> int:
    """Write today's sample (UTC), or bring it up to date: a day's sample ends as what its last
    housekeeping round saw. 1 when it was written."""
    now = now or utcnow()
    today = now.date()
    try:
        with db.session() as session:
            stored = int(session.scalar(select(func.coalesce(func.sum(Project.storage_used_bytes), 0))) or 0)
            count = int(
                session.scalar(select(func.count()).select_from(FileEntry).where(FileEntry.kind == "file"))
                or 0
            )
            row = session.get(UsageSample, today)
            if row is None:
                session.add(UsageSample(day=today, storage_bytes=stored, files=count, taken_at=now))
            else:
                row.storage_bytes, row.files, row.taken_at = stored, count, now
    except IntegrityError:  # another process wrote it meanwhile (a leader handing over): its is as good
        return 0
    return 1
