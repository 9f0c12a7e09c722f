"""``labcloud sessions``: start a session across devices (one job on each chosen instrument, with shared and
per-device parameters), list sessions, show one with each device's part, cancel what has not ended."""

from __future__ import annotations

import time
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

sessions_app = typer.Typer()
ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The session's id.")
ENDED = {"succeeded", "failed", "cancelled", "partial"}


def parse_device(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (the device's own parameters)."""
    name, _, rest = text.partition(":")
    if not name:
        raise fail(f"--device {text!r}: write it as NAME or NAME:KEY=VALUE,KEY=VALUE", 2)
    params = dict(split_pair(p, "--device", "NAME:KEY=VALUE,...") for p in rest.split(",") if p)
    return {"worker": name, "params": {k: parse_value(v) for k, v in params.items()}}


def show_session(found: dict[str, Any]) -> None:
    out.print(
        key_values(
            [
                ("id", str(found.get("id", ""))),
                ("name", found.get("name", "")),
                ("app", f"{found.get('app', '')} {found.get('version', '')}:{found.get('entrypoint', '')}"),
                ("project", found.get("project", "")),
                ("state", found.get("state", "")),
                ("shared", ", ".join(f"{k}={v}" for k, v in (found.get("params") or {}).items())),
                ("started", local_time(found.get("created_at"))),
            ]
        )
    )
    grid = table("device", "state", "progress", "job", "its parameters", "note")
    shared = found.get("params") or {}
    for part in found.get("devices") or []:
        own = {k: v for k, v in (part.get("params") or {}).items() if shared.get(k) != v}
        progress = part.get("progress")
        grid.add_row(
            Text(part.get("worker", "")),
            state_text(str(part.get("state", ""))),
            "" if progress is None else f"{progress:.0%}",
            Text(str(part.get("job_id", ""))),
            Text(", ".join(f"{k}={v}" for k, v in own.items())),
            Text(part.get("note") or part.get("message") or ""),
        )
    out.print(grid)


@sessions_app.callback(invoke_without_command=True)
def _sessions(ctx: typer.Context) -> None:
    """Sessions across devices: one job on each chosen instrument."""
    if ctx.invoked_subcommand is None:
        list_sessions(project=None, json_out=False)


@sessions_app.command("start")
@handle_errors
def start(
    app_ref: str = typer.Argument(..., metavar="APP[:VERSION[:ENTRYPOINT]]", help="What each device runs."),
    device: list[str] = typer.Option(
        [],
        "--device",
        "-d",
        metavar="NAME[:KEY=VALUE,...]",
        help="A device (a worker's name) and its own parameters; repeat for each.",
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", metavar="KEY=VALUE", help="Instead of --device: every connected device with it."
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", metavar="KEY=VALUE", help="A parameter every device shares."
    ),
    name: str = typer.Option("", "--name", help="A name for the session."),
    project: str | None = typer.Option(None, "--project", metavar="SLUG", help="Run it in this project."),
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Wait until every part has ended; exit 1 unless all succeed."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Start a session: one job on each device, with the shared and each device's own parameters."""
    app, version, entrypoint = parse_app_ref(app_ref)
    body: dict[str, Any] = {
        "app": app,
        "version": version,
        "entrypoint": entrypoint,
        "params": {k: parse_value(v) for k, v in (split_pair(p, "-p", "KEY=VALUE") for p in param)},
        "devices": [parse_device(d) for d in device],
        "labels": dict(split_pair(x, "--label", "KEY=VALUE") for x in label),
        "name": name,
    }
    if project:
        body["project"] = project
    from labcloud.client import calls  # (imported when a command runs: the CLI starts without httpx)

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.start_session(body))
        if wait:
            err.print(f"started session {found['id']} on {len(found.get('devices') or [])} device(s)")
            while found.get("state") not in ENDED:
                time.sleep(1.0)
                found = client.call(calls.session(str(found["id"])))
    if json_out:
        print_json(found)
    else:
        show_session(found)
    if wait and found.get("state") != "succeeded":
        raise typer.Exit(1)


@sessions_app.command("list")
@handle_errors
def list_sessions(
    project: str | None = typer.Option(None, "--project", metavar="SLUG", help="A project's sessions."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Your sessions, newest first."""
    from labcloud.client import calls

    with open_client() as client:
        page: dict[str, Any] = client.call(calls.sessions(project))
    items = page.get("items") or []
    if json_out:
        print_json({"items": items})
        return
    if not items:
        err.print("no sessions (labcloud sessions start APP --device NAME ...)")
        return
    grid = table("id", "name", "app", "state", "devices", "started")
    for found in items:
        grid.add_row(
            Text(str(found.get("id", ""))),
            Text(found.get("name", "")),
            Text(found.get("app", "")),
            state_text(str(found.get("state", ""))),
            str(len(found.get("devices") or [])),
            local_time(found.get("created_at")),
        )
    out.print(grid)


@sessions_app.command("show")
@handle_errors
def show(session_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """A session and each device's part in it."""
    from labcloud.client import calls

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.session(session_id))
    if json_out:
        print_json(found)
    else:
        show_session(found)


@sessions_app.command("cancel")
@handle_errors
def cancel(session_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """Cancel every part of the session that has not ended."""
    from labcloud.client import calls

    with open_client() as client:
        found: dict[str, Any] = client.call(calls.cancel_session(session_id))
    if json_out:
        print_json(found)
    else:
        show_session(found)


def register(app: typer.Typer) -> None:
    app.add_typer(sessions_app, name="sessions", rich_help_panel="Client")
