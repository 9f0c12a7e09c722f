"""``labcloud apps``, ``upload``, ``files`` and ``download``."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from labcloud.cli.client.ui import (
    compact,
    err,
    fail,
    handle_errors,
    human_size,
    local_time,
    open_client,
    out,
    print_json,
    table,
    transfer_progress,
)

if TYPE_CHECKING:
    from labcloud.cli.client.http import LabcloudClient

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")

# ---------------------------------------------------------------------------------------------- apps


def _entrypoint_names(app: dict[str, Any], version: str) -> str:
    info = app.get("versions", {}).get(version, {})
    names = list(info.get("entrypoints", {}))
    default = info.get("default_entrypoint")
    return ", ".join(f"{n} (default)" if n == default and len(names) > 1 else n for n in names)


def _param_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "")
    text = "|".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        text += " (" + "|".join(str(v) for v in schema["enum"]) + ")"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        text += f" {'' if low is None else low}..{'' if high is None else high}"
    return text


def _show_app(app: dict[str, Any]) -> None:
    out.print(Text(f"{app['name']} — {app.get('title', '')}", style="bold"))
    if app.get("description"):
        out.print(Text(app["description"]))
    versions = app.get("version_order") or list(app.get("versions", {}))
    for version in versions:
        info = app["versions"][version]
        for ep_name, ep in info.get("entrypoints", {}).items():
            default = " (default)" if ep_name == info.get("default_entrypoint") else ""
            out.print()
            out.print(Text(f"{app['name']}:{version}:{ep_name}{default}", style="bold underline"))
            if ep.get("description"):
                out.print(Text(ep["description"]))
            schema = ep.get("parameters") or {}
            required = set(schema.get("required", []))
            props: dict[str, Any] = schema.get("properties", {})
            if props:
                params = table("parameter", "type", "default", "description", title="parameters")
                for name, prop in props.items():
                    params.add_row(
                        Text(name + (" *" if name in required else "")),
                        Text(_param_type(prop)),
                        Text(compact(prop.get("default"))),
                        Text(prop.get("description", "")),
                    )
                out.print(params)
            inputs: dict[str, Any] = ep.get("inputs") or {}
            if inputs:
                slots = table("input", "type", "required", "description", title="inputs")
                for slot, spec in inputs.items():
                    slots.add_row(
                        Text(slot),
                        Text(str(spec.get("type", ""))),
                        "yes" if spec.get("required") else "no",
                        Text(spec.get("description", "")),
                    )
                out.print(slots)
            res = ep.get("resources") or {}
            if res:
                out.print(Text("resources: " + ", ".join(f"{k}={v}" for k, v in res.items()), style="dim"))
            if ep.get("outputs"):
                out.print(Text("outputs: " + ", ".join(str(o) for o in ep["outputs"]), style="dim"))


@handle_errors
def apps(
    app_name: str | None = typer.Argument(None, metavar="[APP]", help="Show one app in detail."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List the apps you can run, or show one with its versions, entrypoints, parameters and inputs."""
    with open_client() as client:
        if app_name:
            app = client.app(app_name)
            if json_out:
                print_json(app)
            else:
                _show_app(app)
            return
        items = client.apps()
    if json_out:
        print_json({"items": items})
        return
    grid = table("name", "title", "latest", "entrypoints")
    for app in items:
        latest = app.get("latest_version", "")
        grid.add_row(
            Text(app["name"]), Text(app.get("title", "")), Text(latest), _entrypoint_names(app, latest)
        )
    out.print(grid)


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


def upload_files(client: LabcloudClient, plan: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    """Upload each file with a progress bar; one line per file on stderr."""
    results = []
    total = sum(local.stat().st_size for local, _ in plan)
    with transfer_progress() as progress:
        task = progress.add_task("uploading", total=total)
        for local, remote in plan:
            progress.update(task, description=f"↑ {local.name}")
            result = client.upload(local, remote, lambda n: progress.advance(task, n))
            results.append(result)
            about = human_size(result.get("size"))
            if result.get("sha256"):
                about += f", sha256 {result['sha256'][:12]}…"
            progress.console.print(Text(f"uploaded {local} → {result.get('path', remote)} ({about})"))
    return results


@handle_errors
def upload(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH...", help="Files or folders (uploaded recursively)."
    ),
    to: str = typer.Option("", "--to", metavar="FOLDER", help="Folder in your space to upload into."),
    json_out: bool = typer.Option(False, "--json", help="Print the stored files as JSON."),
) -> None:
    """Upload files to your space. A folder keeps its name and the layout of its files."""
    plan = plan_uploads(paths, to)
    if not plan:
        raise fail("nothing to upload (the folders are empty)")
    with open_client() as client:
        results = upload_files(client, plan)
    if json_out:
        print_json(results)


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
        raise fail(f"the server sent an output path outside the destination: {relative}")
    return target


@handle_errors
def download(
    job_id: str = typer.Argument(..., metavar="ID", help="The job."),
    dest: Path | None = typer.Argument(
        None, metavar="[DEST]", help="Folder (default ./<ID>/), or with --zip the file (default ./<ID>.zip)."
    ),
    as_zip: bool = typer.Option(False, "--zip", help="Download all outputs as one zip file."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Download a job's outputs. Each file appears under its final name only once it is complete."""
    written: list[dict[str, Any]] = []
    with open_client() as client:
        if as_zip:
            target = dest or Path(f"{job_id}.zip")
            if target.is_dir():
                target = target / f"{job_id}.zip"
            with transfer_progress() as progress:
                task = progress.add_task("↓ outputs.zip", total=None)
                size = client.download_zip(job_id, target, lambda n: progress.advance(task, n))
            written.append({"path": "outputs.zip", "size": size, "local": str(target)})
        else:
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
                    size = client.download_output(
                        job_id, item["path"], target, lambda n: progress.advance(task, n)
                    )
                    written.append({"path": item["path"], "size": size, "local": str(target)})
    if json_out:
        print_json(written)
        return
    for item in written:
        out.print(Text(f"{item['local']}  ({human_size(item['size'])})"))
    total = sum(int(i["size"]) for i in written)
    err.print(f"downloaded {len(written)} file{'s' if len(written) != 1 else ''}, {human_size(total)}")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(apps)
    app.command(rich_help_panel="Client")(upload)
    app.command(rich_help_panel="Client")(files)
    app.command(rich_help_panel="Client")(download)
