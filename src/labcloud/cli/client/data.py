"""``labcloud upload``, ``files`` and ``download``."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.text import Text

from labcloud.cli.client.ui import (
    JSON_OPTION,
    err,
    fail,
    field_name,
    handle_errors,
    local_time,
    open_client,
    out,
    print_json,
    table,
    transfer_progress,
)
from labcloud.client import uploads
from labcloud.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, UploadState
from labcloud.client.downloads import check_download, inside
from labcloud.client.errors import ClientError
from labcloud.client.progress import UploadBars, human_size

if TYPE_CHECKING:
    from labcloud.client.connection import Connection


# ---------------------------------------------------------------------------------------------- files


def plan_uploads(paths: list[Path], folder: str) -> list[tuple[Path, str]]:
    """(local file, remote path) for each file; a folder's files keep their paths below the folder's name."""
    try:
        return uploads.plan_uploads(paths, folder)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None


def parse_size(text: str) -> int:
    """``8M``, ``256K``, ``1G`` (powers of 1024) or a number of bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in units else (cleaned, "")
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise fail(f"--chunk-size {text!r} is not a size like 8M, 256K or 1048576", 2) from None
    if size < 1:
        raise fail("--chunk-size must be at least 1 byte", 2)
    return size


def run_uploads(
    client: Connection,
    plan: list[tuple[Path, str]],
    *,
    parallel: int = 4,
    chunk_size: int = UPLOAD_CHUNK,
    retries: int = UPLOAD_RETRIES,
) -> tuple[list[dict[str, Any]], list[tuple[Path, ClientError]]]:
    """Upload the plan's files, ``parallel`` at a time, each resumable (also across runs: the upload URLs
    are remembered beside the config file). Progress bars per file and in total on a terminal, a line per
    file otherwise. Returns the stored files (in plan order) and the failures."""
    with transfer_progress() as progress:
        try:
            return client.upload_many(
                plan,
                parallel=parallel,
                chunk_size=chunk_size,
                retries=retries,
                urls=UploadState(),
                watcher=UploadBars(progress, plan),
            )
        except KeyboardInterrupt:
            err.print("stopping; run the same command again to resume")
            raise


def report_failures(failures: list[tuple[Path, ClientError]], total: int) -> typer.Exit:
    """One line per failed file on stderr; the exit to raise."""
    for local, exc in failures:
        fields = "; ".join(f"{field_name(e.get('loc', []))}: {e.get('msg', '')}" for e in exc.errors)
        line = f"{local}: {exc.detail}" + (f" ({fields})" if fields else "")
        err.print(f"[red]error:[/red] {escape(line)}")
    return fail(f"{len(failures)} of {total} uploads failed")


def upload_files(client: Connection, plan: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    """Upload each file (resumably, several at once); exit 1 if any fails."""
    results, failures = run_uploads(client, plan)
    if failures:
        raise report_failures(failures, len(plan))
    return results


@handle_errors
def upload(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH...", help="Files or folders (uploaded recursively)."
    ),
    to: str = typer.Option("", "--to", metavar="FOLDER", help="Folder in your space to upload into."),
    parallel: int = typer.Option(4, "--parallel", "-P", min=1, max=32, help="Files uploaded at once."),
    chunk_size: str = typer.Option(
        "8M", "--chunk-size", metavar="SIZE", help="Bytes per request, e.g. 8M or 256K."
    ),
    retries: int = typer.Option(
        UPLOAD_RETRIES, "--retries", min=0, help="Failed attempts in a row before a file is given up."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the stored files as JSON."),
) -> None:
    """Upload files to your space. A folder keeps its name and the layout of its files.

    Uploads are resumable: after a network failure each file continues where it stopped, and running the
    same command again after a crash or Ctrl-C continues unfinished files. Each stored file's SHA-256 is
    compared with the local file's; a difference is an error.
    """
    size = parse_size(chunk_size)
    plan = plan_uploads(paths, to)
    if not plan:
        raise fail("nothing to upload (the folders are empty)")
    with open_client() as client:
        results, failures = run_uploads(client, plan, parallel=parallel, chunk_size=size, retries=retries)
    if json_out:
        print_json(results)
    else:
        for item in results:
            out.print(Text(f"{item['path']}  {item['size']} bytes  sha256:{item['sha256']}"), soft_wrap=True)
    if failures:
        raise report_failures(failures, len(plan))


@handle_errors
def files(
    prefix: str = typer.Argument("", metavar="[PREFIX]", help="Folder to list (default: the top)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List the files and folders in your space."""
    with open_client() as client:
        items = list(client.files(prefix))
    if json_out:
        print_json({"items": items, "next_cursor": None})
        return
    if not items:
        err.print(f"no files under '{prefix}'" if prefix else "no files yet (labcloud upload PATH)")
        return
    with_sums = any(item.get("sha256") for item in items)
    grid = table("path", "size", "modified", *(["sha256"] if with_sums else []))
    for item in items:
        folder = item.get("type") == "folder"
        grid.add_row(
            Text(item["path"] + ("/" if folder else ""), style="bold blue" if folder else ""),
            "" if folder else human_size(item.get("size")),
            local_time(item.get("modified_at")),
            *([Text((item.get("sha256") or "")[:16])] if with_sums else []),
        )
    out.print(grid)


# ---------------------------------------------------------------------------------------------- download


def _is_job_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _job_outputs(client: Connection, job_id: str, dest: Path | None, as_zip: bool) -> list[dict[str, Any]]:
    if as_zip:
        target = dest or Path(f"{job_id}.zip")
        if target.is_dir():
            target = target / f"{job_id}.zip"
        with transfer_progress() as progress:
            task = progress.add_task("↓ outputs.zip", total=None)
            size = client.download_zip(job_id, target, lambda n: progress.advance(task, n))
        return [{"path": "outputs.zip", "size": size, "local": str(target)}]
    outputs = client.outputs(job_id)
    if not outputs:
        state = client.job(job_id).get("state", "")
        raise fail(f"job {job_id} has no outputs (it is {state})")
    with transfer_progress() as progress:
        task = progress.add_task("downloading", total=sum(int(o.get("size", 0)) for o in outputs))
        return client.download_outputs(
            job_id,
            dest or Path(job_id),
            lambda n: progress.advance(task, n),
            lambda item: progress.update(task, description=f"↓ {item['path']}"),
            outputs,
        )


def _space_path(client: Connection, path: str, dest: Path | None, extract: bool) -> list[dict[str, Any]]:
    """A file of the user's space (its SHA-256 checked), or a folder as NAME.zip or unpacked."""
    info = client.file_info(path)
    if info is None:
        raise fail(f"you have no file or folder '{path}'")
    remote = str(info["path"])
    name = remote.rsplit("/", 1)[-1]
    if info.get("type") == "file":
        target = dest or Path(name)
        if target.is_dir():
            target = target / name
        with transfer_progress() as progress:
            task = progress.add_task(f"↓ {name}", total=info.get("size"))
            size = client.download_file(remote, target, lambda n: progress.advance(task, n))
        expected = info.get("sha256")
        check_download(target, remote, expected)
        return [{"path": remote, "size": size, "local": str(target), "sha256": expected}]
    if not extract:
        target = dest or Path(f"{name}.zip")
        if target.is_dir():
            target = target / f"{name}.zip"
        with transfer_progress() as progress:
            task = progress.add_task(f"↓ {name}.zip", total=None)
            size = client.download_file(remote, target, lambda n: progress.advance(task, n))
        return [{"path": remote + "/", "size": size, "local": str(target)}]
    root = dest or Path(".")
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".zip")
    os.close(fd)
    archive = Path(tmp_name)
    written: list[dict[str, Any]] = []
    try:
        with transfer_progress() as progress:
            task = progress.add_task(f"↓ {name}/", total=None)
            client.download_file(remote, archive, lambda n: progress.advance(task, n))
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = inside(root, member.filename)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                written.append({"path": member.filename, "size": member.file_size, "local": str(target)})
    finally:
        archive.unlink(missing_ok=True)
    return written


@handle_errors
def download(
    target: str = typer.Argument(
        ..., metavar="ID|PATH", help="A job's id (its outputs), or a file or folder of your space."
    ),
    dest: Path | None = typer.Argument(
        None,
        metavar="[DEST]",
        help="Job outputs: folder (default ./<ID>/), with --zip the file (default ./<ID>.zip). "
        "A file: the file or a folder to put it in (default ./NAME). A folder: the zip (default "
        "./NAME.zip), with --extract the folder to unpack into (default .).",
    ),
    as_zip: bool = typer.Option(False, "--zip", help="A job's outputs as one zip file."),
    extract: bool = typer.Option(False, "--extract", "-x", help="A folder of your space: unpack its zip."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Download a job's outputs, or a file or folder of your space (a folder comes as a zip).

    Each file appears under its final name only once it is complete. A path that looks like a job id is
    taken for one: write it as ./ID to mean a file."""
    with open_client() as client:
        if _is_job_id(target):
            written = _job_outputs(client, target, dest, as_zip)
        else:
            written = _space_path(client, target, dest, extract)
    if json_out:
        print_json(written)
        return
    for item in written:
        out.print(Text(f"{item['local']}  ({human_size(item['size'])})"))
    total = sum(int(i["size"]) for i in written)
    err.print(f"downloaded {len(written)} file{'s' if len(written) != 1 else ''}, {human_size(total)}")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(upload)
    app.command(rich_help_panel="Client")(files)
    app.command(rich_help_panel="Client")(download)
