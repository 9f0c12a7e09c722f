"""``labcloud workers`` (admin): register a worker and print its token once, list the workers with their
state, location, capacity, labels and engines, say again where and what one is, drain one, revoke one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from labcloud.cli.client.ui import (
    age,
    compact,
    err,
    fail,
    handle_errors,
    open_client,
    out,
    parse_time,
    print_json,
    table,
)
from labcloud.client.errors import ClientError

if TYPE_CHECKING:
    from labcloud.client.connection import Connection
from labcloud.cli.worker import TOKEN_ENV, parse_labels

STATE_STYLES = {
    "active": "green",
    "draining": "yellow",
    "lost": "bold red",
    "waiting": "cyan",
    "revoked": "dim",
}


# ---------------------------------------------------------------------------------------------- admin

workers_app = typer.Typer(
    help="Admin: remote workers (register, list, edit, drain, revoke).", no_args_is_help=False
)
JSON_OPTION = typer.Option(False, "--json", help="Print JSON.")


def _find(client: Connection, name_or_id: str) -> dict[str, Any]:
    items = list(client.pages("/workers", {}))
    for item in items:
        if name_or_id in (item.get("id"), item.get("name")):
            return item
    matches = (
        [i for i in items if str(i.get("id", "")).startswith(name_or_id)] if len(name_or_id) >= 6 else []
    )
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(str(i.get("name")) for i in items)) or "none registered"
    raise fail(f"no worker named {name_or_id!r} (workers: {known})")


def _capacity(capacity: dict[str, Any]) -> str:
    if not capacity:
        return ""
    free = capacity.get("free") or {}
    parts = []
    for key, unit in (("cpus", "CPU"), ("memory_mb", "MB"), ("gpus", "GPU")):
        if key not in capacity or (key == "gpus" and not capacity.get(key)):
            continue
        total = float(capacity[key])
        used = total - float(free.get(key, total))
        parts.append(f"{used:g}/{total:g} {unit}")
    return " · ".join(parts)


def _containers(item: dict[str, Any]) -> str:
    """The worker's container engine and how many images it has, or none."""
    from labcloud.worker.engines import summary

    return summary(item) if item.get("engines") else "none"


def _admin_hint(exc: ClientError) -> None:
    if exc.status == 403:
        err.print(
            "workers are managed with an administrator's token that has the 'admin' scope "
            "(set LABCLOUD_TOKEN to one)"
        )


@workers_app.callback(invoke_without_command=True)
@handle_errors
def workers(ctx: typer.Context, json_out: bool = JSON_OPTION) -> None:
    """List the workers: state, last heartbeat, capacity in use, running jobs, container engine, labels."""
    if ctx.invoked_subcommand is not None:
        return
    with open_client() as client:
        try:
            items = list(client.pages("/workers", {}))
        except ClientError as exc:
            _admin_hint(exc)
            raise
    if json_out:
        print_json(items)
        return
    if not items:
        err.print("no workers registered (labcloud workers add NAME)")
        return
    grid = table(
        "name", "state", "location", "heartbeat", "in use", "jobs", "containers", "labels", "version", "id"
    )
    for item in items:
        seen = parse_time(item.get("last_heartbeat_at"))
        jobs = item.get("running_jobs") or []
        grid.add_row(
            Text(str(item.get("name", ""))),
            Text(str(item.get("state", "")), style=STATE_STYLES.get(str(item.get("state")), "")),
            Text(str(item.get("location") or "")),
            f"{age(seen)} ago" if seen else "never",
            _capacity(item.get("capacity") or {}),
            str(len(jobs)),
            Text(_containers(item)),
            Text(compact(item.get("labels") or {})),
            Text(str(item.get("version") or "")),
            Text(str(item.get("id", ""))),
        )
    out.print(grid)


@workers_app.command("add")
@handle_errors
def add(
    name: str = typer.Argument(..., help="A name for the worker or pool."),
    label: list[str] = typer.Option(
        [], "--label", metavar="KEY=VALUE", help="A label its jobs may require (gpu=a100); repeat."
    ),
    location: str = typer.Option("", "--location", help="Where it is (a room, a rig), shown with it."),
    description: str = typer.Option("", "--description", help="What it is, in words, shown with it."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Register a worker; its token is printed once (on stdout)."""
    body = {
        "name": name,
        "labels": parse_labels(label),
        "location": location,
        "description": description,
    }
    with open_client() as client:
        try:
            created: dict[str, Any] = client.json("POST", "/workers", json=body)
        except ClientError as exc:
            _admin_hint(exc)
            raise
        server = client.base_url
    if json_out:
        print_json(created)
        return
    err.print(
        f"registered worker {created.get('name')} ({created.get('id')}). Its token, shown only now, is on "
        f"standard output. On the worker machine:\n"
        f"  {TOKEN_ENV}=<token> labcloud worker --server {server}"
    )
    out.print(str(created["token"]))


@workers_app.command("edit")
@handle_errors
def edit(
    name_or_id: str = typer.Argument(..., metavar="NAME_OR_ID"),
    name: str | None = typer.Option(None, "--name", help="A new name (its token and jobs stay)."),
    location: str | None = typer.Option(None, "--location", help="Where it is."),
    description: str | None = typer.Option(None, "--description", help="What it is."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Rename a worker, or say again where and what it is (only the options given change)."""
    given = {"name": name, "location": location, "description": description}
    body = {key: value for key, value in given.items() if value is not None}
    if not body:
        raise fail("nothing to change: give --name, --location or --description", 2)
    with open_client() as client:
        try:
            worker = _find(client, name_or_id)
            result: dict[str, Any] = client.json("PATCH", f"/workers/{worker['id']}", json=body)
        except ClientError as exc:
            _admin_hint(exc)
            raise
    if json_out:
        print_json(result)
        return
    where = f" at {result['location']}" if result.get("location") else ""
    err.print(f"worker {result.get('name')}{where}: saved")


def _act(name_or_id: str, action: str) -> dict[str, Any]:
    with open_client() as client:
        try:
            worker = _find(client, name_or_id)
            result: dict[str, Any] = client.json("POST", f"/workers/{worker['id']}/{action}")
        except ClientError as exc:
            _admin_hint(exc)
            raise
    return result


@workers_app.command("drain")
@handle_errors
def drain(name_or_id: str = typer.Argument(..., metavar="NAME_OR_ID"), json_out: bool = JSON_OPTION) -> None:
    """Let a worker finish its running jobs and take no more."""
    result = _act(name_or_id, "drain")
    if json_out:
        print_json(result)
        return
    running = len(result.get("running_jobs") or [])
    err.print(
        f"worker {result.get('name')} is draining: it finishes its {running} running job(s), takes no more"
    )


@workers_app.command("revoke")
@handle_errors
def revoke(name_or_id: str = typer.Argument(..., metavar="NAME_OR_ID"), json_out: bool = JSON_OPTION) -> None:
    """Revoke a worker's token at once; its running jobs go back to the queue."""
    result = _act(name_or_id, "revoke")
    if json_out:
        print_json(result)
        return
    err.print(f"worker {result.get('name')} revoked: its token no longer works; its jobs were queued again")


def register(app: typer.Typer) -> None:
    app.add_typer(workers_app, name="workers", rich_help_panel="Compute")
