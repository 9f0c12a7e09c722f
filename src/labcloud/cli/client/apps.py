"""``labcloud apps``: the apps you can run, and one in detail; for tool authors and admins, checking app
files (no server needed), and the container images of an app on the server's engine (listing, pulling)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from labcloud.cli.client.ui import (
    JSON_OPTION,
    compact,
    err,
    fail,
    handle_errors,
    open_client,
    out,
    print_json,
    table,
)

if TYPE_CHECKING:
    from labcloud.registry.loader import LoadResult


class _AppsGroup(TyperGroup):
    """``labcloud apps [APP]`` lists the apps or shows one (its command ``show``); ``check``, ``images`` and
    ``pull`` are commands of their own (an app of one of these names: ``labcloud apps show NAME``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's (or click's) Context
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["show", *args]
        return super().parse_args(ctx, args)


apps_app = typer.Typer(
    cls=_AppsGroup,
    help="The apps you can run (labcloud apps [APP]); checking app files; an app's container images.",
)


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


@apps_app.command("show")
@handle_errors
def show(
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


# ---------------------------------------------------------------------------------------------- check


def _app_files(paths: list[Path]) -> list[Path]:
    """The files named, and the app files (*.yaml, *.yml, not hidden) of the folders named, in order."""
    from labcloud.registry.registry import APP_FILE_SUFFIXES

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.suffix in APP_FILE_SUFFIXES and not p.name.startswith(".")
            )
        else:
            found.append(path)
    return found


def _entrypoint_summary(result: LoadResult) -> list[dict[str, Any]]:
    spec = result.spec
    assert spec is not None
    return [
        {"version": version, "entrypoint": name, "runtime": ep.runtime, "image": ep.image}
        for version in spec.sorted_versions()
        for name, ep in spec.versions[version].entrypoints.items()
    ]


def _summary_line(result: LoadResult) -> str:
    """``PATH: NAME — versions 2.0, 1.0 — entrypoints: main (container lab/tool:2), plot (process)``."""
    spec = result.spec
    assert spec is not None
    runs: dict[str, list[str]] = {}
    for item in _entrypoint_summary(result):
        what = f"container {item['image']}" if item["runtime"] == "container" else item["runtime"]
        seen = runs.setdefault(item["entrypoint"], [])
        if what not in seen:
            seen.append(what)
    entrypoints = ", ".join(f"{name} ({', '.join(kinds)})" for name, kinds in runs.items())
    versions = ", ".join(spec.sorted_versions())
    return f"{result.path}: {spec.name} — versions {versions} — entrypoints: {entrypoints}"


@apps_app.command("check")
def check(
    paths: list[Path] = typer.Argument(..., metavar="FILE...", help="App files, or folders of them."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Check app files as the server loads them (no server needed).

    Prints every problem as FILE:LINE: message (exit status 1), else a line per app with its versions,
    entrypoints, runtimes and images."""
    from labcloud.registry.loader import LoadProblem, load_app_file

    results = [load_app_file(path) for path in _app_files(paths)]
    extra: dict[str, list[LoadProblem]] = {}
    declared: dict[tuple[Path, str], str] = {}
    for result in results:
        if result.spec is None:
            continue
        first = declared.setdefault((Path(result.path).parent, result.spec.name), result.path)
        if first != result.path:  # the server would serve one of them only
            message = f"app {result.spec.name!r} is also declared in {Path(first).name} in the same folder"
            extra.setdefault(result.path, []).append(LoadProblem(result.path, result.name_line, message))
    problems = {r.path: [*r.problems, *extra.get(r.path, [])] for r in results}
    count = sum(len(found) for found in problems.values())
    if json_out:
        print_json(
            {
                "files": [
                    {
                        "path": r.path,
                        "ok": not problems[r.path],
                        "app": r.name,
                        "entrypoints": _entrypoint_summary(r) if r.spec is not None else [],
                        "problems": [{"line": p.line, "message": p.message} for p in problems[r.path]],
                    }
                    for r in results
                ],
                "problems": count,
            }
        )
    else:
        for result in results:
            lines = [str(p) for p in problems[result.path]] or [_summary_line(result)]
            for line in lines:
                out.print(Text(line), soft_wrap=True)
    if not results:
        raise fail("no app files found (*.yaml, *.yml)")
    if count:
        failed = sum(1 for found in problems.values() if found)
        err.print(f"{count} problem(s) in {failed} of {len(results)} file(s)")
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- images


def _short_id(image_id: str | None) -> str:
    return image_id[: len("sha256:") + 12] if image_id else ""


@apps_app.command("images")
@handle_errors
def images(app_name: str = typer.Argument(..., metavar="APP"), json_out: bool = JSON_OPTION) -> None:
    """Admin: which of an app's images the server's container engine holds, and which live workers have them.

    Jobs never pull an image: `labcloud apps pull` does on the server; a worker's engine is its own."""
    with open_client() as client:
        result = client.app_images(app_name)
    if json_out:
        print_json(result)
        return
    items: list[dict[str, Any]] = result.get("items", [])
    if not items:
        err.print(f"{app_name} has no container entrypoints")
        return
    grid = table("version", "entrypoint", "image", "engine", "present", "id", "problem", "workers")
    for item in items:
        engine = item.get("engine") or {}
        grid.add_row(
            Text(str(item.get("version", ""))),
            Text(str(item.get("entrypoint", ""))),
            Text(str(item.get("image", ""))),
            Text(str(engine.get("kind") or "none")),
            Text("yes", style="green") if engine.get("present") else Text("no", style="bold red"),
            Text(_short_id(engine.get("id"))),
            Text(str(engine.get("problem") or "")),
            _on_workers(item.get("workers") or []),
        )
    out.print(grid)


def _on_workers(workers: list[dict[str, Any]]) -> Text:
    """The live workers that have the image, and those that do not (marked), or "none live"."""
    if not workers:
        return Text("none live", style="dim")
    text = Text()
    for n, worker in enumerate(workers):
        if n:
            text.append(", ")
        name = str(worker.get("name", "?"))
        if worker.get("present"):
            text.append(name)
        else:
            text.append(f"{name} (missing)", style="bold red")
    return text


@apps_app.command("pull")
@handle_errors
def pull(
    ref: str = typer.Argument(..., metavar="APP[@VERSION]", help="The latest version unless one is named."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Admin: pull an app version's images on the server's container engine.

    The server pulls with its registry credentials; this waits until every pull has ended. Exit status 1
    when one failed."""
    name, at, version = ref.partition("@")
    if not name or (at and not version):
        raise fail(f"'{ref}' is not APP[@VERSION]", 2)
    with open_client() as client:
        result = client.pull_images(name, version or None)
    results: list[dict[str, Any]] = result.get("results", [])
    if json_out:
        print_json(result)
    elif not results:
        err.print(f"{result.get('app', name)} {result.get('version', '')} has no container images")
    else:
        grid = table("image", "result", "id", "message", title=f"{result.get('app')} {result.get('version')}")
        for item in results:
            ok = bool(item.get("ok"))
            grid.add_row(
                Text(str(item.get("image", ""))),
                Text("pulled", style="green") if ok else Text("failed", style="bold red"),
                Text(_short_id(item.get("id"))),
                Text(str(item.get("message") or "")),
            )
        out.print(grid)
    if any(not item.get("ok") for item in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(apps_app, name="apps", rich_help_panel="Client")
