"""A GA4GH TES task when it runs: where its inputs' bytes come from and where its outputs go, for the
runner on this server (the local executor) and for remote runners (pull workers, Slurm, Celery).

On this server the runner gets a :class:`~labcloud.execution.task.TaskLayout` whose inputs write their
own bytes (:func:`layout`) and a :class:`TaskOutputs` that places what it collected. A remote runner gets
the layout with its job (:func:`remote_task`): each input as files with URLs of the worker API, which
serves them from wherever they are (:func:`input_bytes`: the inline content, an ``s3://`` object or an
``http(s)://`` download are fetched by the server, never by the worker, so the object store's credentials
and the download policy stay here); each collected file comes back through the worker API and
:func:`deliver` places it where the task's outputs point, as the local runner does.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import FileEntry, Job, TesTask, User
from labcloud.errors import LabcloudError, NotFound
from labcloud.execution.attempt import Writer
from labcloud.execution.runner import InputSource
from labcloud.execution.task import TaskInput, TaskLayout
from labcloud.services import file_store, files, job_files, projects, tes_s3, url_fetch
from labcloud.services.tes import APP
from labcloud.services.tes_document import SCHEME, TaskRefused, task_layout, url_kind
from labcloud.services.tes_task_in import TaskIn
from labcloud.settings import Settings
from labcloud.storage.base import Storage


class InputUnavailable(LabcloudError):
    status, title, type_slug = 422, "Input unavailable", "input-unavailable"


class OutputNotDelivered(LabcloudError):
    status, title, type_slug = 422, "Output not delivered", "output-not-delivered"


def task_row(session: Session, job: Job) -> TesTask | None:
    return session.get(TesTask, job.id) if job.app == APP else None


def count_outputs(session: Session, job: Job) -> int:
    """How many files a job delivered: a task's wherever its outputs pointed, any other job's in its
    folder of the owner's space."""
    row = task_row(session, job)
    if row is not None:
        return len(row.outputs_log)
    return job_files.count_outputs(session, job.project_id, job.id)


# --- on this server -------------------------------------------------------------------------------------


def layout(
    session: Session, settings: Settings, storage: Storage, job: Job, row: TesTask, *, inputs: bool
) -> TaskLayout:
    """The task's steps, files and outputs for the runner; with ``inputs``, where each input's bytes come
    from (resolved now: a file of the owner's space that is gone fails the staging)."""
    task = TaskIn.model_validate(row.document)
    sources: list[TaskInput] = []
    for i, item in enumerate(task.inputs or [] if inputs else []):
        name = PurePosixPath(item.path).name
        content = row.contents.get(str(i))
        kind, where = url_kind(item.url or "")
        if content is None and kind == "space":
            source = _space_input(session, storage, job, name, where, [f"inputs[{i}]"])
        else:
            source = InputSource(name, [(name, _fetcher(settings, row, i))])
        sources.append(TaskInput(item.path, item.type == "DIRECTORY", source))
    return task_layout(task, settings, sources)


def _fetcher(settings: Settings, row: TesTask, index: int) -> Writer:
    """How to write the bytes of a task's input that is no file of the space: its inline content, an
    s3:// object or an http(s):// download."""
    content = row.contents.get(str(index))
    if content is not None:
        return partial(_write_bytes, content.encode())
    item = (TaskIn.model_validate(row.document).inputs or [])[index]
    kind, where = url_kind(item.url or "")
    if kind == "s3":
        return partial(tes_s3.download, settings, where)
    if kind == "http":
        fetch = partial(
            url_fetch.download,
            where,
            limit=settings.tes_max_download_bytes,
            allow_private=settings.tes_download_private,
        )
        return _discard_size(fetch)
    raise TaskRefused(where)


def _write_bytes(data: bytes, dest: BinaryIO) -> None:
    dest.write(data)


def _discard_size(fetch: Callable[[BinaryIO], int]) -> Callable[[BinaryIO], None]:
    def write(dest: BinaryIO) -> None:
        fetch(dest)

    return write


def _space_input(
    session: Session, storage: Storage, job: Job, name: str, where: str, loc: list[str | int]
) -> InputSource:
    return InputSource(
        name,
        [
            (rel, partial(storage.fetch, row.blob_key or ""))
            for rel, row in _space_files(session, job, name, where, loc)
        ],
    )


def outputs_space(session: Session, job: Job) -> files.Space:
    """Where a job's files go: its project's space; a task's (``labcloud:///path`` outputs) its owner's
    personal space, whichever project the task runs in, as its inputs are read from there."""
    if job.app != APP:
        return job_files.job_space(job)
    return personal_space(session, job.owner_id)


def personal_space(session: Session, user_id: uuid.UUID) -> files.Space:
    """The user's personal space (``labcloud:///path`` of a task)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("The task's owner is gone.")
    return files.Space(projects.personal(session, user).id, user.id)


def _space_files(
    session: Session, job: Job, name: str, where: str, loc: list[str | int]
) -> list[tuple[str, FileEntry]]:
    """(path under the input's folder, file) of each file a space input brings: the file itself, named
    after the input's path, or every file in the folder."""
    space = personal_space(session, job.owner_id)
    entry = job_files.resolve_input(session, space, where, loc)
    if entry.kind == files.FILE:
        return [(name, entry)]
    start = len(entry.path) + 1
    return [(f"{name}/{row.path[start:]}", row) for row in files.files_under(session, space, entry.path)]


class TaskOutputs:
    """Where a task's collected files go in its owner's space, and the record of what was delivered."""

    def __init__(self, settings: Settings, row: TesTask, layout: TaskLayout) -> None:
        self.settings = settings
        self.layout = layout
        task = TaskIn.model_validate(row.document)
        self.outputs = task.outputs or []
        self.job_id = row.job_id

    def paths(self, rel: str) -> list[str]:
        """The paths in the owner's space of the collected file at ``rel`` (under the containers' root),
        one for each output it belongs to."""
        found = []
        for index, below in self.layout.place(rel):
            kind, base = url_kind(self.outputs[index].url)
            base = base.rstrip("/")
            path = f"{base}/{below}" if below else base
            found.append(path if kind == "s3" else files.clean(path, ["outputs", index, "url"]))
        return list(dict.fromkeys(found))

    def upload(self, url: str, source: Path) -> None:
        """Write a collected file to its s3:// output (TesS3 errors say why not)."""
        tes_s3.upload(self.settings, url, source)

    def missing(self, rels: list[str]) -> list[str]:
        """The file outputs (no folder, no pattern) that the task did not leave."""
        return self.layout.missing(rels)

    def record(self, session: Session, placed: list[tuple[str, str, int]], *, add: bool = False) -> None:
        """Note the delivered files (collected path, path in the space or s3:// URL, size) in the task's
        output log; with ``add``, besides those noted before (a remote runner sends them one by one)."""
        row = session.get(TesTask, self.job_id)
        if row is None:
            return
        entries = [
            {
                "url": path if is_s3(path) else f"{SCHEME}///{path}",
                "path": "/" + rel,
                "size_bytes": str(size),
            }
            for rel, path, size in placed
        ]
        if add:
            urls = {entry["url"] for entry in entries}
            entries = [e for e in row.outputs_log if e.get("url") not in urls] + entries
        row.outputs_log = entries


def copies_for(source: Path, count: int) -> list[Path]:
    """``count`` files with ``source``'s bytes, for a file that goes to several outputs (storing a file
    consumes it): ``source`` itself last, a copy beside it for each other one. ``source`` is always a
    file the server owns (a collected output's copy, an upload received), never one of a job's folder."""
    copies = []
    for n in range(count - 1):
        copy = source.with_name(f"{source.name}.{n}")
        shutil.copyfile(source, copy)
        copies.append(copy)
    return [*copies, source] if count > 0 else []


def is_s3(destination: str) -> bool:
    return destination.startswith("s3://")


# --- on a remote runner ---------------------------------------------------------------------------------


def remote_task(session: Session, settings: Settings, storage: Storage, job: Job) -> dict[str, Any] | None:
    """What a remote runner needs of a task besides the job (None for a job that is no task): its layout,
    and each input as the files it brings with the URLs to fetch them from. A new attempt starts with an
    empty output log. InvalidInput when a file of the owner's space it reads is gone."""
    row = task_row(session, job)
    if row is None:
        return None
    row.outputs_log = []
    task = TaskIn.model_validate(row.document)
    inputs = []
    for i, item in enumerate(task.inputs or []):
        name = PurePosixPath(item.path).name
        kind, where = url_kind(item.url or "")
        content = row.contents.get(str(i))
        found: list[dict[str, Any]]
        if content is None and kind == "space":
            found = [
                {
                    "path": rel,
                    "size": entry.size,
                    "sha256": entry.sha256,
                    "url": storage.presigned_get(entry.blob_key or "", entry.name, settings.presign_expiry_s)
                    or f"/api/v1/worker/jobs/{job.id}/inputs/{entry.id}",
                }
                for rel, entry in _space_files(session, job, name, where, [f"inputs[{i}]"])
            ]
        else:
            data = content.encode() if content is not None else None
            found = [
                {
                    "path": name,
                    "url": f"/api/v1/worker/jobs/{job.id}/task-inputs/{i}",
                    "size": None if data is None else len(data),
                    "sha256": None if data is None else hashlib.sha256(data).hexdigest(),
                }
            ]
        inputs.append(
            {"path": item.path, "directory": item.type == "DIRECTORY", "name": name, "files": found}
        )
    return {**task_layout(task, settings, []).to_wire(), "inputs": inputs}


def input_file(session: Session, job: Job, file_id: uuid.UUID) -> FileEntry | None:
    """A file of the owner's space that one of the task's inputs brings (by id); None if none does (or the
    job is no task)."""
    row = task_row(session, job)
    if row is None:
        return None
    for i, item in enumerate(TaskIn.model_validate(row.document).inputs or []):
        kind, where = url_kind(item.url or "")
        if row.contents.get(str(i)) is not None or kind != "space":
            continue
        name = PurePosixPath(item.path).name
        for _, entry in _space_files(session, job, name, where, [f"inputs[{i}]"]):
            if entry.id == file_id:
                return entry
    return None


def input_bytes(settings: Settings, row: TesTask, index: int, dest: BinaryIO) -> None:
    """Write the bytes of the task's input ``index`` that is no file of the space (inline content, s3://,
    http(s)://) into ``dest``, for a remote runner; NotFound for another input, InputUnavailable when its
    source does not give it."""
    items = TaskIn.model_validate(row.document).inputs or []
    if not 0 <= index < len(items):
        raise NotFound("The task has no such input.")
    kind, _ = url_kind(items[index].url or "")
    if row.contents.get(str(index)) is None and kind not in ("s3", "http"):
        raise NotFound("That input is a file of the space: fetch it by its file id.")
    try:
        _fetcher(settings, row, index)(dest)
    except (tes_s3.S3Error, url_fetch.FetchError) as exc:
        raise InputUnavailable(f"input #{index} ({items[index].path}): {exc}") from None


def deliver(
    db: Database,
    storage: Storage,
    settings: Settings,
    job_id: uuid.UUID,
    into: files.Space,
    upload: files.Upload,
) -> None:
    """Place one file a remote runner collected (``upload.path`` is its path under the containers' root;
    the file is consumed) where the task's outputs point: s3:// objects and paths of the space ``into``
    (the task's project's), and note it in the task's output log."""
    rel = upload.path
    try:
        with db.session() as session:
            job = session.get(Job, job_id)
            row = task_row(session, job) if job is not None else None
            if job is None or row is None:
                raise NotFound("The job is no task.")
            outputs = TaskOutputs(settings, row, layout(session, settings, storage, job, row, inputs=False))
        paths = outputs.paths(rel)
        placed = []
        for url in [p for p in paths if is_s3(p)]:
            try:
                outputs.upload(url, upload.source)
            except tes_s3.S3Error as exc:
                raise OutputNotDelivered(str(exc)) from None
            placed.append((rel, url, upload.size))
        space = [p for p in paths if not is_s3(p)]
        uploads = []
        for path, source in zip(space, copies_for(upload.source, len(space)), strict=True):
            uploads.append(files.Upload(path, source, upload.size, upload.sha256))
            placed.append((rel, path, upload.size))
        if uploads:
            file_store.publish_many(db, storage, settings, into, uploads, job_id=job_id, enforce_limit=False)
    finally:
        upload.source.unlink(missing_ok=True)
    with db.session() as session:
        outputs.record(session, placed, add=True)
