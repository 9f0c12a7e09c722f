"""A job's files in its project's space: the inputs it names (and every file a folder input brings), and
its outputs, indexed under ``jobs/<id>/`` when it ends."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import FileEntry, Job
from labcloud.errors import InvalidInput
from labcloud.services.files import (
    FILE,
    Space,
    Upload,
    clean,
    entry_at,
    files_under,
    index_objects,
    inside_folder,
)
from labcloud.settings import Settings


def resolve_input(session: Session, space: Space, raw: str, loc: list[str | int]) -> FileEntry:
    """A job input: a file or folder of the space, or InvalidInput at ``loc``."""
    path = clean(raw, loc)
    row = entry_at(session, space, path)
    if row is None:
        raise InvalidInput.field(loc, f"you have no file or folder '{path}'")
    return row


def input_entries(session: Session, entry: FileEntry) -> list[tuple[str, FileEntry]]:
    """(path relative to the folder holding the input, file) of every file an input brings."""
    if entry.kind == FILE:
        return [(entry.name, entry)]
    start = len(entry.parent) + 1 if entry.parent else 0
    space = Space(entry.project_id, entry.owner_id)
    return [(r.path[start:], r) for r in files_under(session, space, entry.path)]


def input_files(session: Session, entry: FileEntry) -> list[tuple[str, str]]:
    """(relative path, object key) of every file an input brings."""
    return [(rel, row.blob_key or "") for rel, row in input_entries(session, entry)]


def job_space(job: Job) -> Space:
    """Where a job's outputs go: its project's space, written as its owner's."""
    return Space(job.project_id, job.owner_id)


def job_outputs_folder(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}"


def job_outputs(session: Session, project_id: uuid.UUID, job_id: uuid.UUID) -> list[FileEntry]:
    """The output files of a job still in its project's space (members may have moved or deleted some)."""
    stmt = select(FileEntry).where(
        FileEntry.project_id == project_id,
        FileEntry.job_id == job_id,
        FileEntry.kind == FILE,
        inside_folder(FileEntry.path, job_outputs_folder(job_id)),
    )
    return list(session.scalars(stmt.order_by(FileEntry.path)))


def count_outputs(session: Session, project_id: uuid.UUID, job_id: uuid.UUID) -> int:
    return len(job_outputs(session, project_id, job_id))


def index_outputs(
    session: Session,
    settings: Settings,
    space: Space,
    job_id: uuid.UUID,
    stored: list[tuple[Upload, str]],
) -> list[str]:
    """Index a job's outputs, already in the store as (upload, key), in the caller's transaction; the keys
    of the objects they replace (to delete once it commits). Outputs count towards the project's storage
    but are never refused for lack of room: a finished result is not thrown away."""
    uploads = [item for item, _ in stored]
    _, replaced = index_objects(
        session, settings, space, uploads, [k for _, k in stored], job_id=job_id, enforce=False
    )
    return replaced


def output_path(job_id: uuid.UUID, rel: str) -> str:
    """Where an output of a job goes in its project's space; InvalidInput for a name no path may have."""
    return clean(f"{job_outputs_folder(job_id)}/{rel}", ["output"])
