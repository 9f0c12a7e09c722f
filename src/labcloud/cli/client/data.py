"""``labcloud upload``, ``files`` and ``download``."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
import uuid
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.text import Text

from labcloud.cli.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, UploadState
from labcloud.cli.client.errors import ClientError
from labcloud.cli.client.ui import (
    JSON_OPTION,
    err,
    fail,
    handle_errors,
    human_size,
    loc_text,
    local_time,
    open_client,
    out,
    print_json,
    table,
    transfer_progress,
)

if TYPE_CHECKING:
    from labcloud.cli.client.http import LabcloudClient


# ---------------------------------------------------------------------------------------------- files


def _join(*parts: str) -> str:
    return posixpath.join(*[p.strip("/") for p in parts if p.strip("/")])


def plan_uploads(paths: list[Path], folder: str) -> list[tuple[Path, str]]:
    """(local file, remote path) for each file; a folder's files keep their paths below the folder's name."""
    plan: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            base = path.resolve().name
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    plan.append((item, _join(folder, base, item.relative_to(path).as_posix())))
        elif path.is_file():
            plan.append((path, _join(folder, path.name)))
        else:
            raise fail(f"{path}: no such file or folder")
    return plan


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
    client: LabcloudClient,
    plan: list[tuple[Path, str]],
    *,
    parallel: int = 4,
    chunk_size: int = UPLOAD_CHUNK,
    retries: int = UPLOAD_RETRIES,
) -> tuple[list[dict[str, Any]], list[tuple[Path, ClientError]]]:
    """Upload the plan's files, ``parallel`` at a time, each resumable (also across runs: the upload URLs
    are remembered beside the config file). Progress bars per file and in total on a terminal, a line per
    file otherwise. Returns the stored files (in plan order) and the failures."""
    from labcloud.cli.client.http import UploadCancelled

    state = UploadState()
    sizes = [local.stat().st_size for local, _ in plan]
    done: dict[int, dict[str, Any]] = {}
    failed: dict[int, ClientError] = {}
    cancel = threading.Event()
    per_thread = threading.local()
    clients: list[LabcloudClient] = []
    clients_lock = threading.Lock()

    def thread_client() -> LabcloudClient:
        own: LabcloudClient | None = getattr(per_thread, "client", None)
        if own is None:
            own = per_thread.client = client.clone()
            with clients_lock:
                clients.append(own)
        return own

    with transfer_progress() as progress:
        overall = progress.add_task(f"↑ {len(plan)} file{'s' if len(plan) != 1 else ''}", total=sum(sizes))

        def note(message: str) -> None:
            progress.console.print(Text(message, style="dim"))

        def one(index: int) -> dict[str, Any]:
            local, remote = plan[index]
            task = progress.add_task(f"  {local.name}", total=sizes[index])

            def moved(count: int) -> None:
                progress.advance(task, count)
                progress.advance(overall, count)

            try:
                return thread_client().upload(
                    local,
                    remote,
                    moved,
                    urls=state,
                    chunk_size=chunk_size,
                    retries=retries,
                    on_note=note,
                    cancel=cancel,
                )
            finally:
                progress.remove_task(task)

        def outcome(index: int, future: Future[dict[str, Any]]) -> None:
            local = plan[index][0]
            try:
                done[index] = result = future.result()
            except UploadCancelled:
                return
            except (ClientError, OSError) as exc:
                if isinstance(exc, OSError):
                    exc = ClientError(0, f"cannot read {local}: {exc.strerror or exc}")
                failed[index] = exc  # reported at the end, with the others
                return
            size, sha256 = human_size(result["size"]), result["sha256"][:12]
            progress.console.print(Text(f"uploaded {local} → {result['path']} ({size}, sha256 {sha256}…)"))

        pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(plan))))
        futures = {pool.submit(one, i): i for i in range(len(plan))}
        try:
            for future in as_completed(futures):
                outcome(futures[future], future)
        except KeyboardInterrupt:
            cancel.set()  # running uploads stop after their chunk; the rest never start
            err.print("stopping; run the same command again to resume")
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for own in clients:
                own.close()
    return [done[i] for i in sorted(done)], [(plan[i][0], failed[i]) for i in sorted(failed)]


def report_failures(failures: list[tuple[Path, ClientError]], total: int) -> typer.Exit:
    """One line per failed file on stderr; the exit to raise."""
    for local, exc in failures:
        fields = "; ".join(f"{loc_text(e.get('loc', []))}: {e.get('msg', '')}" for e in exc.errors)
        line = f"{local}: {exc.detail}" + (f" ({fields})" if fields else "")
        err.print(f"[red]error:[/red] {escape(line)}")
    return fail(f"{len(failures)} of {total} uploads failed")


def upload_files(client: LabcloudClient, plan: list[tuple[Path, str]]) -> list[dict[str, Any]]:
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


def _inside(root: Path, relative: str) -> Path:
    target = root / relative
    if not target.resolve().is_relative_to(root.resolve()):
        raise fail(f"the server sent a path outside the destination: {relative}")
    return target


def _is_job_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _job_outputs(
    client: LabcloudClient, job_id: str, dest: Path | None, as_zip: bool
) -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = []
    if as_zip:
        target = dest or Path(f"{job_id}.zip")
        if target.is_dir():
            target = target / f"{job_id}.zip"
        with transfer_progress() as progress:
            task = progress.add_task("↓ outputs.zip", total=None)
            size = client.download_zip(job_id, target, lambda n: progress.advance(task, n))
        return [{"path": "outputs.zip", "size": size, "local": str(target)}]
    root = dest or Path(job_id)
    outputs = client.outputs(job_id)
    if not outputs:
        state = client.job(job_id).get("state", "")
        raise fail(f"job {job_id} has no outputs (it is {state})")
    with transfer_progress() as progress:
        task = progress.add_task("downloading", total=sum(int(o.get("size", 0)) for o in outputs))
        for item in outputs:
            target = _inside(root, item["path"])
            progress.update(task, description=f"↓ {item['path']}")
            size = client.download_output(job_id, item["path"], target, lambda n: progress.advance(task, n))
            written.append({"path": item["path"], "size": size, "local": str(target)})
    return written


def _space_path(client: LabcloudClient, path: str, dest: Path | None, extract: bool) -> list[dict[str, Any]]:
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
        if expected and _sha256_of(target) != expected:
            target.unlink(missing_ok=True)
            raise fail(
                f"{remote}: the downloaded bytes do not match the server's SHA-256 {expected}; removed"
            )
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
                target = _inside(root, member.filename)
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
