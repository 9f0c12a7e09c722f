"""What the blocking and the asyncio client share: where the server and token come from, the plan of an
upload and its outcome, where downloads go, waiting's verdict, and a job bound to its client. (The
connections' shared part is :mod:`labcloud.client.connection_base`.)"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from labcloud.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, ClientConfig, UploadState, resolve
from labcloud.client.errors import ClientError, JobFailed, NotFound, NotLoggedIn, WaitTimeout
from labcloud.client.models import JobInfo, ProjectInfo, Quota, QuotaRequest, StoredFile, UsageRow
from labcloud.client.progress import ShowProgress
from labcloud.client.uploads import TransferOptions, plan_uploads

LocalPath = str | PathLike[str]
# (named, because in the classes that use them ``list`` is a method's name)
StoredFiles = list[StoredFile]
ProjectList = list[ProjectInfo]
QuotaList = list[Quota]
RequestList = list[QuotaRequest]
UsageRows = list[UsageRow]
Paths = list[Path]
M = TypeVar("M", bound=JobInfo)


class FilesUpload(TypedDict, total=False):
    """How files are uploaded (see :meth:`labcloud.client.Files.upload`): ``progress`` (False; True shows
    bars, a function is called with bytes done and total), ``parallel`` files at a time (4),
    ``chunk_size`` bytes a request (8 MiB), ``retries`` failures in a row before a file's upload ends (8),
    ``resume`` an interrupted upload where it stopped (True)."""

    progress: ShowProgress
    parallel: int
    chunk_size: int
    retries: int
    resume: bool


def from_environment(server: str | None) -> tuple[str, str]:
    """The server and token: ``server`` or ``LABCLOUD_SERVER`` or the stored login's; ``LABCLOUD_TOKEN`` or
    the token ``labcloud login`` stored for that server."""
    target = resolve(ClientConfig.load(), server)
    if not target.token:
        raise NotLoggedIn(0, f"not logged in to {target.server}: run labcloud login, or set LABCLOUD_TOKEN")
    return target.server, target.token


def upload_plan(paths: LocalPath | Sequence[LocalPath], to: str) -> list[tuple[Path, str]]:
    items = [paths] if isinstance(paths, str | PathLike) else list(paths)
    plan = plan_uploads(items, to)
    if not plan:
        raise FileNotFoundError("nothing to upload (the folders are empty)")
    return plan


def uploaded(done: list[dict[str, Any]], failed: list[tuple[Path, ClientError]]) -> StoredFiles:
    """The stored files; the first failure is raised (the other files are stored all the same)."""
    if failed:
        raise failed[0][1]
    return [StoredFile.model_validate(item) for item in done]


def file_target(info: dict[str, Any], dest: LocalPath | None) -> Path:
    """Where a download of the file (or folder, as NAME.zip) ``info`` goes: ``dest``, or into ``dest``
    when it is a folder, or into the current folder."""
    name = str(info["path"]).rsplit("/", 1)[-1] + ("" if info.get("type") == "file" else ".zip")
    target = Path(dest) if dest is not None else Path(name)
    return target / name if target.is_dir() else target


def outputs_target(job: JobInfo, dest: LocalPath | None, as_zip: bool) -> Path:
    if not as_zip:
        return Path(dest) if dest is not None else Path(job.id)
    target = Path(dest) if dest is not None else Path(f"{job.id}.zip")
    return target / f"{job.id}.zip" if target.is_dir() else target


def no_such_file(path: str) -> NotFound:
    return NotFound(404, f"you have no file or folder '{path}'")


def waited(job: M, timeout: float | None, check: bool) -> M:
    if not job.ended:
        raise WaitTimeout(job, timeout or 0)
    if check and not job.succeeded:
        raise JobFailed(job)
    return job


def bind(model: type[M], data: dict[str, Any], client: Any) -> M:
    job = model.model_validate(data)
    job._client = client  # type: ignore[attr-defined]
    return job


def upload_settings(options: FilesUpload) -> tuple[ShowProgress, dict[str, Any]]:
    """How to show an upload, and the options of the connection's ``upload_many``."""
    transfer: TransferOptions = {
        "chunk_size": options.get("chunk_size", UPLOAD_CHUNK),
        "retries": options.get("retries", UPLOAD_RETRIES),
        "urls": UploadState() if options.get("resume", True) else None,
    }
    return options.get("progress", False), {"parallel": options.get("parallel", 4), **transfer}
