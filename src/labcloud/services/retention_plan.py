"""Retention's plan: the policy that applies to each job (the installation's ``retention_*`` settings, an
app's ``retention:`` block), and what is due under it: which ended jobs lose their folders, outputs or
themselves, which are kept (a user's newest, those a group or an unfinished job still needs), and the
folders of jobs that are gone. Doing it is :mod:`labcloud.services.retention`."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import DirectUpload, Job, JobInput, Upload
from labcloud.db.types import utcnow
from labcloud.registry import AppRegistry, AppSpec
from labcloud.services.job_files import job_outputs
from labcloud.services.job_logs import job_dir, log_path, times_path
from labcloud.services.job_states import TERMINAL
from labcloud.settings import Settings

Action = Literal["folder", "outputs", "job"]
ENDED = [s.value for s in TERMINAL]
ORPHAN_FOLDER_AGE = timedelta(
    hours=1
)  # a job's folder is made after its row: one without a row is a leftover
DAY_S = 86400.0


# ------------------------------------------------------------------------------------------------ policy


@dataclass(frozen=True)
class Policy:
    """What applies to the jobs of one app: days after the end (0: never) and how many newest to keep."""

    folders_days: float = 0
    outputs_days: float = 0
    jobs_days: float = 0
    keep_last: int = 0
    keep_last_per_app: bool = False  # the app set keep_last: it counts that app's jobs only

    @property
    def active(self) -> bool:
        return bool(self.folders_days or self.outputs_days or self.jobs_days)

    @property
    def shortest_days(self) -> float | None:
        days = [d for d in (self.folders_days, self.outputs_days, self.jobs_days) if d]
        return min(days) if days else None


def global_policy(settings: Settings) -> Policy:
    return Policy(
        settings.retention_folders_days,
        settings.retention_outputs_days,
        settings.retention_jobs_days,
        settings.retention_keep_last,
    )


def policy_for(settings: Settings, app: AppSpec | None) -> Policy:
    """The installation's policy with what ``app``'s ``retention:`` block sets instead."""
    base = global_policy(settings)
    own = app.retention if app is not None else None
    if own is None:
        return base
    return Policy(
        base.folders_days if own.folders_days is None else own.folders_days,
        base.outputs_days if own.outputs_days is None else own.outputs_days,
        base.jobs_days if own.jobs_days is None else own.jobs_days,
        base.keep_last if own.keep_last is None else own.keep_last,
        own.keep_last is not None,
    )


def policies(settings: Settings, apps: AppRegistry) -> tuple[Policy, dict[str, Policy]]:
    """The installation's policy and each app's that differs from it (an app gone from the registry gets
    the installation's)."""
    snapshot = apps.snapshot()
    own = {
        name: policy_for(settings, spec) for name, spec in snapshot.apps.items() if spec.retention is not None
    }
    return global_policy(settings), own


# ------------------------------------------------------------------------------------------------ plans


@dataclass
class Item:
    """One deletion: what goes (``folder``: the job's working folders on this server; ``outputs``: its
    output files; ``job``: all of it), of which job, and how much."""

    action: Action
    job_id: uuid.UUID
    owner_id: uuid.UUID
    project_id: uuid.UUID
    app: str
    ended_at: datetime
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("job_id", "owner_id", "project_id"):
            out[key] = str(out[key])
        out["ended_at"] = self.ended_at.isoformat()
        return out


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)  # expired resumable and direct uploads
    orphan_folders: list[str] = field(default_factory=list)  # job folders whose job is gone
    kept_recent: int = 0  # due, but among their user's keep_last newest
    kept_held: int = 0  # due, but their group or a reader of their outputs has not ended


def _ranked(now: datetime, shortest_days: float) -> Any:
    """Ended jobs that ended over ``shortest_days`` ago, with their rank among their user's ended jobs
    (newest first) over all apps and within their app."""
    ended_at = func.coalesce(Job.finished_at, Job.updated_at)
    order = (Job.created_at.desc(), Job.id.desc())
    ranked = (
        select(
            Job.id,
            Job.owner_id,
            Job.project_id,
            Job.app,
            Job.group_id,
            Job.outputs_deleted_at,
            ended_at.label("ended_at"),
            func.row_number().over(partition_by=Job.owner_id, order_by=order).label("rank_all"),
            func.row_number().over(partition_by=(Job.owner_id, Job.app), order_by=order).label("rank_app"),
        )
        .where(Job.state.in_(ENDED))
        .subquery()
    )
    cutoff = now - timedelta(days=shortest_days)
    return select(ranked).where(ranked.c.ended_at < cutoff).order_by(ranked.c.ended_at, ranked.c.id)


def plan(db: Database, settings: Settings, apps: AppRegistry, *, now: datetime | None = None) -> Plan:
    """What is due now (a dry run shows it; :func:`run` does it)."""
    now = now or utcnow()
    base, own = policies(settings, apps)
    out = Plan()
    shortest = [d for d in (p.shortest_days for p in (base, *own.values())) if d]
    with db.session() as session:
        if shortest:
            for row in session.execute(_ranked(now, min(shortest))):
                _consider(session, settings, own.get(row.app, base), row, now, out)
        out.uploads = _expired_uploads(session, now)
        out.orphan_folders = [str(p) for p in _orphan_folders(session, settings, now)]
    return out


def _consider(
    session: Session, settings: Settings, policy: Policy, row: Any, now: datetime, out: Plan
) -> None:
    age_days = (now - row.ended_at).total_seconds() / DAY_S
    due_job = bool(policy.jobs_days) and age_days >= policy.jobs_days
    due_outputs = (
        bool(policy.outputs_days) and age_days >= policy.outputs_days and row.outputs_deleted_at is None
    )
    due_folder = bool(policy.folders_days) and age_days >= policy.folders_days
    if not (due_job or due_outputs or due_folder):
        return
    rank = row.rank_app if policy.keep_last_per_app else row.rank_all
    if policy.keep_last and rank <= policy.keep_last:
        out.kept_recent += 1
        return
    item = Item("job", row.id, row.owner_id, row.project_id, row.app, row.ended_at)
    outputs = job_outputs(session, row.project_id, row.id) if due_job or due_outputs else []
    item.files, item.bytes = len(outputs), sum(f.size for f in outputs)
    keys = [f.blob_key for f in outputs if f.blob_key]
    if (due_job or (due_outputs and outputs)) and held_by(session, row.group_id, keys) is not None:
        out.kept_held += 1
        due_job = due_outputs = False
    if due_job:
        out.items.append(item)
        return
    if due_outputs and outputs:
        item.action = "outputs"
        out.items.append(item)
    if due_folder:
        left = leftovers(settings, row.id)
        if left:
            size = sum(_size(p) for p in left)
            out.items.append(
                Item("folder", row.id, row.owner_id, row.project_id, row.app, row.ended_at, 0, size)
            )


def held_by(session: Session, group_id: uuid.UUID | None, output_keys: list[str]) -> str | None:
    """Why a job may not lose its outputs or itself now, or None: its group still has a job that has not
    ended, or a job that has not ended holds one of its outputs as an input's content."""
    if group_id is not None:
        waiting = session.scalar(
            select(Job.id).where(Job.group_id == group_id, Job.state.not_in(ENDED)).limit(1)
        )
        if waiting is not None:
            return f"job {waiting} of its group has not ended"
    for start in range(0, len(output_keys), 500):
        reader = session.scalar(
            select(JobInput.job_id)
            .join(Job, Job.id == JobInput.job_id)
            .where(JobInput.blob_key.in_(output_keys[start : start + 500]), Job.state.not_in(ENDED))
            .limit(1)
        )
        if reader is not None:
            return f"job {reader} reads its outputs and has not ended"
    return None


def _expired_uploads(session: Session, now: datetime) -> list[dict[str, Any]]:
    found = [
        {"kind": "resumable", "id": str(u.id), "owner_id": str(u.owner_id), "path": u.path, "bytes": u.offset}
        for u in session.scalars(select(Upload).where(Upload.expires_at <= now).order_by(Upload.expires_at))
    ]
    found += [
        {"kind": "direct", "id": str(u.id), "owner_id": str(u.owner_id), "path": u.path, "bytes": u.size}
        for u in session.scalars(
            select(DirectUpload).where(DirectUpload.expires_at < now).order_by(DirectUpload.expires_at)
        )
    ]
    return found


# ------------------------------------------------------------------------------------------ folders on disk


def leftovers(settings: Settings, job_id: uuid.UUID) -> list[Path]:
    """What an ended job left in its folder on this server but its log: its attempts' folders."""
    folder = job_dir(settings, job_id)
    keep = {log_path(settings, job_id).name, times_path(log_path(settings, job_id)).name}
    try:
        return sorted(p for p in folder.iterdir() if p.name not in keep)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size(path: Path) -> int:
    """Bytes of the regular files under ``path``, following no link."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return info.st_size if path.is_file() and not path.is_symlink() else 0
    total = 0
    for top, _dirs, names in os.walk(path, followlinks=False):
        for name in names:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            total += st.st_size if not os.path.islink(os.path.join(top, name)) else 0
    return total


def remove_path(path: Path) -> None:
    """Remove a file or a folder and everything in it, following no link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _orphan_folders(session: Session, settings: Settings, now: datetime) -> list[Path]:
    """Job folders on this server whose job is gone (a crash after its deletion committed)."""
    try:
        entries = list(settings.jobs_dir.iterdir())
    except FileNotFoundError:
        return []
    named: dict[uuid.UUID, Path] = {}
    limit = (now - ORPHAN_FOLDER_AGE).timestamp()
    for entry in entries:
        try:
            job_id = uuid.UUID(entry.name)
        except ValueError:
            continue
        if str(job_id) == entry.name and entry.lstat().st_mtime < limit:
            named[job_id] = entry
    ids = list(named)
    known: set[uuid.UUID] = set()
    for start in range(0, len(ids), 500):
        known.update(session.scalars(select(Job.id).where(Job.id.in_(ids[start : start + 500]))))
    return sorted(path for job_id, path in named.items() if job_id not in known)


# ------------------------------------------------------------------------------------------------ runs
