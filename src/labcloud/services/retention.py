"""Retention: ended jobs lose their working folders, their outputs or themselves some days after they ended.

The policy is the installation's (``retention_*`` settings), and each app's ``retention:`` block replaces any
of its keys for that app's jobs. A job is touched only once it has ended (a failed job that is retried was
queued again in the same transaction, so an ended job stays ended); never while it is one of its user's
``keep_last`` newest ended jobs (of all apps under the installation's setting, of its app under the app's
own), never while its group (a session, a sweep) still has a job that has not ended, and never while a job
that has not ended reads one of its outputs.

:func:`plan` says what is due; a dry run shows it, a real run (:func:`run`) does each item in a transaction of
its own that checks again under a lock, in the order that keeps a crash harmless: the rows go first (with the
storage use booked in the same transaction, and the outputs marked deleted on the job), the stored objects
and the folder after the commit. A crash in between leaves objects that no row refers to (swept by
housekeeping, :func:`labcloud.services.file_store.sweep_orphans`) and a folder without a job (swept here),
never a job that looks whole with part of it gone. Objects that another job holds as an input's content,
or that a file still refers to, stay (:func:`labcloud.services.file_store.drop_unreferenced`).

Abandoned uploads are the uploads services' business (they expire ``upload_expiry_hours`` after their last
write, every housekeeping round); a run from the command line lists and expires them too.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import DirectUpload, FileEntry, Job, JobInput, RetentionRun, Upload
from labcloud.db.types import utcnow
from labcloud.registry import AppRegistry, AppSpec
from labcloud.services import audit, direct_uploads, file_store, uploads
from labcloud.services.files import FILE, FOLDER, inside_folder
from labcloud.services.job_files import job_outputs, job_outputs_folder
from labcloud.services.job_inputs import pinned
from labcloud.services.job_logs import job_dir, log_path, times_path
from labcloud.services.job_states import TERMINAL
from labcloud.services.storage_limits import book
from labcloud.settings import Settings
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)
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
        leftovers = _leftovers(settings, row.id)
        if leftovers:
            size = sum(_size(p) for p in leftovers)
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


def _leftovers(settings: Settings, job_id: uuid.UUID) -> list[Path]:
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


def _remove(path: Path) -> None:
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


@dataclass
class Report:
    dry_run: bool
    done: list[Item] = field(default_factory=list)
    skipped: list[tuple[Item, str]] = field(default_factory=list)  # planned, found otherwise at its turn
    uploads: list[dict[str, Any]] = field(default_factory=list)
    uploads_expired: int = 0
    orphan_folders: list[str] = field(default_factory=list)
    kept_recent: int = 0
    kept_held: int = 0

    def summary(self) -> dict[str, int]:
        count = {a: sum(1 for i in self.done if i.action == a) for a in ("job", "outputs", "folder")}
        return {
            "jobs_deleted": count["job"],
            "outputs_deleted": count["outputs"],
            "folders_deleted": count["folder"],
            "files_deleted": sum(i.files for i in self.done),
            "bytes_freed": sum(i.bytes for i in self.done),
            "uploads_expired": self.uploads_expired if not self.dry_run else len(self.uploads),
            "orphan_folders_removed": len(self.orphan_folders),
            "kept_recent": self.kept_recent,
            "kept_held": self.kept_held,
            "skipped": len(self.skipped),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deletions": [i.to_json() for i in self.done],
            "skipped": [{**i.to_json(), "why": why} for i, why in self.skipped],
            "uploads": self.uploads,
            "orphan_folders": self.orphan_folders,
            "summary": self.summary(),
        }


def configured(settings: Settings, apps: AppRegistry) -> bool:
    """Whether any policy deletes anything (the installation's, or an app's)."""
    base, own = policies(settings, apps)
    return base.active or any(p.active for p in own.values())


def run(
    db: Database,
    storage: Storage,
    settings: Settings,
    apps: AppRegistry,
    *,
    dry_run: bool = False,
    with_uploads: bool = True,
    now: datetime | None = None,
) -> Report:
    """Plan, and unless ``dry_run`` delete what is due, logging each deletion and a summary. A real run is
    recorded (:class:`RetentionRun`): scheduled runs are at most one per ``retention_every_h``."""
    now = now or utcnow()
    todo = plan(db, settings, apps, now=now)
    report = Report(
        dry_run,
        uploads=todo.uploads if with_uploads else [],
        orphan_folders=todo.orphan_folders,
        kept_recent=todo.kept_recent,
        kept_held=todo.kept_held,
    )
    if dry_run:
        report.done = todo.items
        return report
    run_id = _start(db, now)
    for item in todo.items:
        try:
            why_not = _do(db, storage, settings, item, now)
        except Exception as exc:  # (a deadlock with a concurrent rerun, the store away): next run tries again
            log.warning("retention: job %s (%s) failed: %s", item.job_id, item.action, exc)
            why_not = f"failed: {exc}"
        if why_not is None:
            report.done.append(item)
            record_deletion(item)
        else:
            report.skipped.append((item, why_not))
            log.info("retention: kept job %s (%s): %s", item.job_id, item.action, why_not)
    for folder in todo.orphan_folders:
        _remove(Path(folder))
        log.info("retention: removed the folder of a deleted job: %s", folder)
    if with_uploads:
        report.uploads_expired = uploads.expire(db, settings, now) + direct_uploads.expire(db, storage)
    _finish(db, run_id, report)
    summary = report.summary()
    log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in summary.items()))
    return report


def _audited(item: Item) -> dict[str, Any]:
    """What the audit log keeps of a deletion by retention."""
    return {
        "app": item.app,
        "owner_id": str(item.owner_id),
        "project_id": str(item.project_id),
        "ended_at": item.ended_at.isoformat(),
        "files": item.files,
        "bytes": item.bytes,
    }


def record_deletion(item: Item) -> None:
    """A deletion by retention, in the server's log (its audit event was written with the deletion)."""
    log.info(
        "retention: deleted %s of job %s (app %s, owner %s, project %s, ended %s): %d file(s), %d bytes",
        {"job": "the whole job", "outputs": "the outputs", "folder": "the working folders"}[item.action],
        item.job_id,
        item.app,
        item.owner_id,
        item.project_id,
        item.ended_at.isoformat(),
        item.files,
        item.bytes,
    )


def _start(db: Database, now: datetime) -> uuid.UUID:
    """Record a run as it starts (a crash part way counts as a run); runs of over a year ago go."""
    with db.session() as session:
        session.execute(delete(RetentionRun).where(RetentionRun.started_at < now - timedelta(days=366)))
        row = RetentionRun(started_at=now, summary={})
        session.add(row)
        session.flush()
        return row.id


def _finish(db: Database, run_id: uuid.UUID, report: Report) -> None:
    with db.session() as session:
        row = session.get(RetentionRun, run_id)
        if row is not None:
            row.finished_at, row.summary = utcnow(), report.summary()


def due(db: Database, settings: Settings, now: datetime | None = None) -> bool:
    """Whether no run started within the last ``retention_every_h`` (on any server: the record is shared)."""
    now = now or utcnow()
    with db.session() as session:
        last = session.scalar(select(func.max(RetentionRun.started_at)))
    return last is None or now - last >= timedelta(hours=settings.retention_every_h)


def run_if_due(db: Database, storage: Storage, settings: Settings, apps: AppRegistry) -> int:
    """Housekeeping's part: a run when a policy is configured and the last one is old enough; the number of
    deletions. (Uploads are housekeeping's own task.)"""
    if not configured(settings, apps) or not due(db, settings):
        return 0
    return len(run(db, storage, settings, apps, with_uploads=False).done)


# ------------------------------------------------------------------------------------------ doing one


def _locked_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job, if it still exists and has ended, locked until the transaction ends (a rerun of it reads
    it with a share lock, so its copy of the pins either committed first or finds the job gone)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.state.in_(ENDED)).with_for_update())


def _do(db: Database, storage: Storage, settings: Settings, item: Item, now: datetime) -> str | None:
    """Do one planned deletion, checking again; why it was not done, or None."""
    if item.action == "folder":
        with db.session() as session:
            if session.scalar(select(Job.id).where(Job.id == item.job_id, Job.state.in_(ENDED))) is None:
                return "the job is gone or was queued again"
        for path in _leftovers(settings, item.job_id):
            _remove(path)
        audit.record_apart(db.engine, "retention.folder_deleted", "job", item.job_id, _audited(item))
        return None
    keys: list[str] = []
    with db.session() as session:
        job = _locked_job(session, item.job_id)
        if job is None:
            return "the job is gone or was queued again"
        outputs = job_outputs(session, job.project_id, job.id)
        why = held_by(session, job.group_id, [f.blob_key for f in outputs if f.blob_key])
        if why is not None:
            return why
        if item.action == "outputs" and job.outputs_deleted_at is not None:
            return "its outputs were deleted already"
        keys = [f.blob_key for f in outputs if f.blob_key]
        item.files, item.bytes = len(outputs), sum(f.size for f in outputs)
        _drop_outputs(session, job, outputs)
        if item.action == "job":
            keys += [row.blob_key for row in pinned(session, job.id)]
            session.delete(job)  # its history, tags, pins and task go with it (foreign keys cascade)
        else:
            job.outputs_deleted_at = now
        audit.record(session, f"retention.{item.action}_deleted", "job", item.job_id, _audited(item))
    try:
        file_store.drop_unreferenced(db, storage, keys)  # after the commit; what is still held stays
    except Exception as exc:  # (the store away) done all the same: housekeeping sweeps unreferenced objects
        log.warning("retention: job %s's objects stay until housekeeping sweeps them: %s", item.job_id, exc)
    if item.action == "job":
        shutil.rmtree(job_dir(settings, item.job_id), ignore_errors=True)
    return None


def _drop_outputs(session: Session, job: Job, outputs: list[FileEntry]) -> None:
    """Delete the output files' rows and book their bytes back, in the caller's transaction; then the
    job's outputs folder, if nothing else was put in it."""
    ids = [f.id for f in outputs]
    for start in range(0, len(ids), 500):
        session.execute(delete(FileEntry).where(FileEntry.id.in_(ids[start : start + 500])))
    book(session, job.project_id, -sum(f.size for f in outputs), None)
    folder = job_outputs_folder(job.id)
    inside = or_(FileEntry.path == folder, inside_folder(FileEntry.path, folder))
    left = session.scalar(
        select(FileEntry.id)
        .where(FileEntry.project_id == job.project_id, FileEntry.kind == FILE, inside)
        .limit(1)
    )
    if left is None:
        session.execute(
            delete(FileEntry).where(FileEntry.project_id == job.project_id, FileEntry.kind == FOLDER, inside)
        )
