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
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Job, RetentionRun
from labcloud.db.types import utcnow
from labcloud.registry import AppRegistry
from labcloud.services import audit, direct_uploads, file_store, uploads
from labcloud.services.files import FILE, FOLDER, inside_folder
from labcloud.services.job_files import job_outputs, job_outputs_folder
from labcloud.services.job_inputs import pinned
from labcloud.services.job_logs import job_dir
from labcloud.services.retention_plan import ENDED, Item, held_by, leftovers, plan, policies, remove_path
from labcloud.services.storage_limits import book
from labcloud.settings import Settings
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)


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
        remove_path(Path(folder))
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
        for path in leftovers(settings, item.job_id):
            remove_path(path)
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
