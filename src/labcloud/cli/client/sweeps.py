"""``labcloud sweep``: submit a parameter sweep (a job for each combination of a grid's values, or for each
set of parameters), list sweeps, show one with its progress, cancel what has not ended."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from labcloud.cli.client.jobs import parse_app_ref, parse_value, split_pair
from labcloud.cli.client.ui import (
    JSON_OPTION,
    err,
    fail,
    handle_errors,
    key_values,
    local_time,
    open_client,
    out,
    print_json,
    state_text,
    table,
)

sweep_app = typer.Typer()
ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The sweep's id.")
ENDED = {"succeeded", "failed", "cancelled", "partial"}


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``NAME=A,B,C`` (each value JSON when it parses, else text) or ``NAME=[JSON list]``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, text = split_pair(item, "--grid", "NAME=VALUE,VALUE,...")
        whole = parse_value(text)
        grid[name] = whole if isinstance(whole, list) else [parse_value(v) for v in text.split(",")]
    return grid


def parse_set(text: str) -> dict[str, Any]:
    """``KEY=VALUE,KEY=VALUE``: one job's own parameters."""
    pairs = (split_pair(p, "--set", "KEY=VALUE,KEY=VALUE") for p in text.split(",") if p)
    return {k: parse_value(v) for k, v in pairs}


def read_sets(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects, one job's parameters each."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"--sets-file {path}: {exc}", 2) from None
    if not isinstance(found, list) or not all(isinstance(s, dict) for s in found):
        raise fail(f"--sets-file {path}: a JSON list of objects, one job's parameters each", 2)
    return found


def progress_line(found: dict[str, Any]) -> str:
    counts = found.get("counts") or {}
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{found.get('state', '')}: {found.get('done', 0):.0%} of {found.get('total', 0)} ended ({parts})"


def show_sweep(found: dict[str, Any]) -> None:
    out.print(
        key_values(
            [
                ("id", str(found.get("id", ""))),
                ("name", found.get("name", "")),
                ("app", f"{found.get('app', '')} {found.get('version', '')}:{found.get('entrypoint', '')}"),
                ("project", found.get("project", "")),
                ("state", found.get("state", "")),
                ("jobs", str(found.get("total", 0))),
                ("ended", f"{found.get('done', 0):.0%}"),
                ("varies", ", ".join(found.get("varies") or [])),
                ("shared", ", ".join(f"{k}={v}" for k, v in (found.get("params") or {}).items())),
                ("submitted", local_time(found.get("created_at"))),
            ]
        )
    )
    grid = table("state", "jobs")
    for state, n in sorted((found.get("counts") or {}).items()):
        grid.add_row(state_text(state), str(n))
    out.print(grid)


@sweep_app.callback(invoke_without_command=True)
def _sweeps(ctx: typer.Context) -> None:
    """Parameter sweeps: one job for each combination of values, submitted together."""
    if ctx.invoked_subcommand is None:
        list_sweeps(project=None, json_out=False)


@sweep_app.command("submit")
@handle_errors
def submit(
    app_ref: str = typer.Argument(..., metavar="APP[:VERSION[:ENTRYPOINT]]", help="What each job runs."),
    grid: list[str] = typer.Option(
        [],
        "--grid",
        "-g",
        metavar="NAME=A,B,...",
        help="A parameter's values (JSON when they parse); a job for every combination. Repeat.",
    ),
    sets: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE,...", help="Instead of --grid: one job's parameters. Repeat."
    ),
    sets_file: Path | None = typer.Option(
        None, "--sets-file", metavar="FILE", help="Instead of --grid: a JSON list of parameter sets."
    ),
    param: list[str] = typer.Option([], "--param", "-p", metavar="KEY=VALUE", help="A parameter all share."),
    name: str = typer.Option("", "--name", help="A name for the sweep."),
    project: str | None = typer.Option(None, "--project", metavar="SLUG", help="Run it in this project."),
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Wait until every job has ended; exit 1 unless all succeed."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Submit a sweep: a job for each combination of the --grid values (or each --set), all at once."""
    app, version, entrypoint = parse_app_ref(app_ref)
    body: dict[str, Any] = {
        "app": app,
        "version": version,
        "entrypoint": entrypoint,
        "params": {k: parse_value(v) for k, v in (split_pair(p, "-p", "KEY=VALUE") for p in param)},
        "name": name,
    }
    if grid and (sets or sets_file):
        raise fail("give --grid, or --set / --sets-file, not both", 2)
    if grid:
        body["grid"] = parse_grid(grid)
    elif sets or sets_file:
        body["sets"] = [parse_set(s) for s in sets] + (read_sets(sets_file) if sets_file else [])
    else:
        raise fail("give the values to sweep: --grid NAME=A,B,... or --set KEY=VALUE,...", 2)
    if project:
        body["project"] = project
    from labcloud.client import calls  # (imported when a command runs: the CLI starts without httpx)

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.submit_sweep(body))
        if wait:
            err.print(f"submitted sweep {found['id']}: {found.get('total', 0)} jobs")
            said = ""
            while found.get("state") not in ENDED:
                time.sleep(1.0)
                found = client.call(calls.sweep(str(found["id"])))
                line = progress_line(found)
                if line != said:
                    err.print(line)
                    said = line
    if json_out:
        print_json(found)
    else:
        show_sweep(found)
    if wait and found.get("state") != "succeeded":
        raise typer.Exit(1)


@sweep_app.command("list")
@handle_errors
def list_sweeps(
    project: str | None = typer.Option(None, "--project", metavar="SLUG", help="A project's sweeps."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Your sweeps, newest first."""
    from labcloud.client import calls

    with open_client() as client:
        page: dict[str, Any] = client.call(calls.sweeps(project))
    items = page.get("items") or []
    if json_out:
        print_json({"items": items})
        return
    if not items:
        err.print("no sweeps (labcloud sweep submit APP --grid NAME=A,B ...)")
        return
    grid = table("id", "name", "app", "state", "jobs", "ended", "submitted")
    for found in items:
        grid.add_row(
            Text(str(found.get("id", ""))),
            Text(found.get("name", "")),
            Text(found.get("app", "")),
            state_text(str(found.get("state", ""))),
            str(found.get("total", 0)),
            f"{found.get('done', 0):.0%}",
            local_time(found.get("created_at")),
        )
    out.print(grid)


@sweep_app.command("show")
@handle_errors
def show(sweep_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """A sweep and its jobs counted by state."""
    from labcloud.client import calls

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.sweep(sweep_id))
    if json_out:
        print_json(found)
    else:
        show_sweep(found)


@sweep_app.command("cancel")
@handle_errors
def cancel(sweep_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """Cancel every job of the sweep that has not ended."""
    from labcloud.client import calls

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.cancel_sweep(sweep_id))
    if json_out:
        print_json(found)
    else:
        show_sweep(found)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep", rich_help_panel="Client")
