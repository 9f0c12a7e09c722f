"""What a job's inputs were: the exact content each one brought when the job was submitted.

A job names its inputs by path, but a path can be renamed, deleted or uploaded over while the job waits or
long after it ended. So at submit every file an input brings is pinned (:class:`JobInput`): the stored
object it was, its checksum and where it was. The job stages that content whatever became of the path, its
page links that content, and a rerun may take it again ("original") or read the paths anew ("current").
Pinned objects stay while the job exists (:func:`labcloud.services.files.release`); deleting the job lets
housekeeping sweep the ones no file refers to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from labcloud.db.models import FileEntry, Job, JobInput, Project, User
from labcloud.errors import Forbidden, InvalidInput, NotFound
from labcloud.services import job_files, projects, spaces
from labcloud.services.projects import Action

Now = Literal["same", "changed", "gone"]


def input_name(raw: str) -> str:
    """The name an input has in the job's folder: the last part of the path it was named by."""
    return PurePosixPath(raw).name


def pin(session: Session, user: User, job: Job) -> None:
    """Record the content of every file the inputs of ``job`` (just inserted) bring, as ``user`` reads
    them now. The rows are read with a share lock, so a concurrent delete or replacement of one of them
    waits for this transaction (and then sees the hold) or came first (and the input is gone)."""
    for slot, raw in job.inputs.items():
        loc: list[str | int] = ["body", "inputs", slot]
        entry = spaces.job_input(session, user, raw, loc)
        brought = job_files.input_entries(session, entry)
        current = _locked(session, [row.id for _, row in brought])
        for rel, row in brought:
            now = current.get(row.id)
            if now is None or not now.blob_key:
                raise InvalidInput.field(
                    loc, f"'{row.path}' changed while the job was submitted; submit again"
                )
            session.add(
                JobInput(
                    job_id=job.id,
                    slot=slot,
                    rel=rel,
                    project_id=now.project_id,
                    path=now.path,
                    size=now.size,
                    sha256=now.sha256,
                    blob_key=now.blob_key,
                )
            )
    session.flush()


def _locked(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, FileEntry]:
    """The rows ``ids`` as committed now, share-locked until the transaction ends (PostgreSQL; SQLite has
    one writer at a time)."""
    out: dict[uuid.UUID, FileEntry] = {}
    for start in range(0, len(ids), 500):
        stmt = (
            select(FileEntry)
            .where(FileEntry.id.in_(ids[start : start + 500]))
            .with_for_update(read=True)
            .execution_options(populate_existing=True)
        )
        out.update((row.id, row) for row in session.scalars(stmt))
    return out


def check_readable(session: Session, user: User, rows: list[JobInput]) -> None:
    """InvalidInput unless ``user`` may still read the spaces ``rows`` were pinned from: a job reads its
    inputs with its owner's access when it starts, and a rerun with its rerunner's."""
    seen: dict[uuid.UUID, str | None] = {}
    for row in rows:
        if row.project_id not in seen:
            seen[row.project_id] = _why_not(session, user, row.project_id)
        why = seen[row.project_id]
        if why is not None:
            raise InvalidInput.field(["inputs", row.slot], f"'{row.path}' cannot be read: {why}")


def readable(session: Session, user: User, row: JobInput) -> bool:
    """Whether ``user`` (who sees the job) may read the content of this input's file: what was pinned
    from a project's space, its members; from a user's own files, that user (and administrators)."""
    return _why_not(session, user, row.project_id) is None


def _why_not(session: Session, user: User, project_id: uuid.UUID) -> str | None:
    if user.is_admin:
        return None
    project = session.get(Project, project_id)
    if project is None:
        return "its project is gone"
    if project.personal_user_id is not None:
        return None if project.personal_user_id == user.id else "it was in another user's own files"
    try:
        projects.authorize(session, user, project, Action.READ)
    except (NotFound, Forbidden) as exc:
        return exc.detail
    return None


def copy(session: Session, user: User, source: Job, job: Job) -> None:
    """Give ``job`` (a rerun by ``user``) exactly the inputs' content ``source`` ran with; InvalidInput
    when ``user`` may not read where it came from. The source is read with a share lock: retention
    deleting it at the same moment either waits for this copy (and then sees the new holds) or came first."""
    if session.scalar(select(Job.id).where(Job.id == source.id).with_for_update(read=True)) is None:
        raise NotFound(f"Job {source.id} was deleted meanwhile.")
    rows = pinned(session, source.id)
    check_readable(session, user, rows)
    for row in rows:
        session.add(
            JobInput(
                job_id=job.id,
                slot=row.slot,
                rel=row.rel,
                project_id=row.project_id,
                path=row.path,
                size=row.size,
                sha256=row.sha256,
                blob_key=row.blob_key,
            )
        )
    session.flush()


def pinned(session: Session, job_id: uuid.UUID) -> list[JobInput]:
    return list(
        session.scalars(
            select(JobInput).where(JobInput.job_id == job_id).order_by(JobInput.slot, JobInput.rel)
        )
    )


def one(session: Session, job_id: uuid.UUID, slot: str, rel: str) -> JobInput:
    row = session.scalar(
        select(JobInput).where(JobInput.job_id == job_id, JobInput.slot == slot, JobInput.rel == rel)
    )
    if row is None:
        raise NotFound(f"The job's input {slot!r} has no file '{rel}'.")
    return row


@dataclass
class Staged:
    """What a runner stages for one input: its name in the job's folder and (relative path, object key,
    size, checksum) of each file."""

    name: str
    files: list[JobInput]


def for_staging(session: Session, job: Job) -> dict[str, Staged]:
    """Each input's pinned files, if its owner may still read where they came from. A job queued before
    inputs were pinned is pinned now."""
    if not job.inputs:
        return {}
    owner = session.get(User, job.owner_id)
    if owner is None:
        raise InvalidInput.field(["inputs"], "the job's owner is gone")
    rows = pinned(session, job.id)
    if job.inputs and not rows:
        pin(session, owner, job)
        rows = pinned(session, job.id)
    check_readable(session, owner, rows)
    out = {slot: Staged(input_name(raw), []) for slot, raw in job.inputs.items()}
    for row in rows:
        if row.slot in out:
            out[row.slot].files.append(row)
    return out


def now_at(session: Session, rows: list[JobInput]) -> dict[int, Now]:
    """Whether each pinned file's path still holds its content: same (the same object, or the same bytes
    uploaded again), changed (other content) or gone."""
    pairs = list({(r.project_id, r.path) for r in rows})
    current: dict[tuple[uuid.UUID, str], tuple[str | None, str | None]] = {}
    for start in range(0, len(pairs), 500):
        stmt = select(FileEntry.project_id, FileEntry.path, FileEntry.blob_key, FileEntry.sha256).where(
            tuple_(FileEntry.project_id, FileEntry.path).in_(pairs[start : start + 500]),
            FileEntry.kind == "file",
        )
        current.update(((p, path), (key, sha)) for p, path, key, sha in session.execute(stmt))
    out: dict[int, Now] = {}
    for r in rows:
        there = current.get((r.project_id, r.path))
        if there is None:
            out[r.id] = "gone"
        else:
            key, sha = there
            out[r.id] = "same" if key == r.blob_key or (sha is not None and sha == r.sha256) else "changed"
    return out
