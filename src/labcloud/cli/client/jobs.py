"""``labcloud submit``, ``jobs``, ``status``, ``logs``, ``cancel`` and ``rerun``; how they show and follow a
job is :mod:`labcloud.cli.client.job_display`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from labcloud.cli.client.data import upload_files
from labcloud.cli.client.ui import (
    err,
    fail,
    handle_errors,
    local_time,
    open_client,
    out,
    percent,
    print_json,
    state_text,
    table,
)
from labcloud.client import jobs as job_requests

if TYPE_CHECKING:
    pass
from labcloud.cli.client.job_display import (
    app_label,
    ended_text,
    finish,
    follow_log,
    last_lines,
    print_job,
    project_label,
    show_events,
    show_job,
    wait_for,
)

JSON_OPTION = typer.Option(False, "--json", help="Print the job as JSON.")
PROJECT_HELP = "A project's slug (labcloud projects)"
ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The job's id.")


class State(StrEnum):
    queued = "queued"
    staging = "staging"
    running = "running"
    finishing = "finishing"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"


# ---------------------------------------------------------------------------------------------- parsing


def parse_app_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``APP[:VERSION[:ENTRYPOINT]]``; an empty part means the default (``hello::greet``)."""
    try:
        return job_requests.parse_app_ref(ref)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def split_pair(item: str, option: str, form: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise fail(f"{option} {item!r}: write it as {form}", 2)
    return key, value


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects, "quoted"), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# ---------------------------------------------------------------------------------------------- commands


@handle_errors
def submit(
    app_ref: str = typer.Argument(..., metavar="APP[:VERSION[:ENTRYPOINT]]", help="What to run."),
    param: list[str] = typer.Option(
        [], "--param", "-p", metavar="KEY=VALUE", help="A parameter; VALUE is JSON when it parses, else text."
    ),
    input_: list[str] = typer.Option(
        [],
        "--input",
        "-i",
        metavar="SLOT=PATH",
        help="An input: a local file (uploaded to inputs/ first) or a path in your space.",
    ),
    name: str = typer.Option("", "--name", help="A name for the job."),
    tag: list[str] = typer.Option([], "--tag", metavar="KEY=VALUE", help="A tag; repeat for several."),
    project: str | None = typer.Option(
        None,
        "--project",
        metavar="SLUG",
        help=f"{PROJECT_HELP}: run the job there, for its members to see (default: your personal one).",
    ),
    worker: list[str] = typer.Option(
        [],
        "--worker",
        metavar="NAME",
        help="Run it only on this worker (an instrument); repeat for a choice.",
    ),
    wait: bool = typer.Option(
        False, "--wait", "-w", help="Wait for the job to end; exit 1 unless it succeeds."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Like --wait, printing the log as it grows."),
    json_out: bool = JSON_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the job id."),
) -> None:
    """Start a job. Local input files are uploaded first."""
    app, version, entrypoint = parse_app_ref(app_ref)
    params = dict(split_pair(p, "-p", "KEY=VALUE") for p in param)
    tags = dict(split_pair(t, "--tag", "KEY=VALUE") for t in tag)
    given: dict[str, str | Path] = {}
    for item in input_:
        slot, value = split_pair(item, "-i", "SLOT=PATH")
        local = Path(value).expanduser()
        given[slot] = local if local.is_file() else value  # a local file is uploaded to inputs/ first
    inputs, plan = job_requests.input_plan(given)
    body: dict[str, Any] = {
        "app": app,
        "version": version,
        "entrypoint": entrypoint,
        "params": {k: parse_value(v) for k, v in params.items()},
        "inputs": inputs,
        "name": name,
        "tags": tags,
    }
    if project:
        body["project"] = project
    if worker:
        body["workers"] = worker
    with open_client() as client:
        if plan:
            upload_files(client, plan)
        job = client.submit(body)
        if not (wait or follow):
            print_job(job, json_out, quiet)
            return
        err.print(f"submitted job {job['id']} ({app_label(job)}:{job.get('entrypoint', '')})")
        if follow:
            follow_log(client, str(job["id"]))
        job = wait_for(client, job)
        tail = "" if follow else last_lines(client, job)
    finish(job, json_out, quiet, tail)


@handle_errors
def jobs(
    state: list[State] = typer.Option(
        [], "--state", "-s", help="Only jobs in this state; repeat for several."
    ),
    app: str | None = typer.Option(None, "--app", help="Only jobs of this app."),
    tag: list[str] = typer.Option([], "--tag", metavar="KEY=VALUE", help="Only jobs with this tag."),
    project: str | None = typer.Option(
        None,
        "--project",
        "-p",
        metavar="SLUG",
        help=f"{PROJECT_HELP}: its jobs, everyone's, instead of yours.",
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=200, help="How many (newest first)."),
    all_: bool = typer.Option(False, "--all", "-a", help="All matching jobs (follows every page)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List your jobs (or a project's), newest first."""
    for item in tag:
        split_pair(item, "--tag", "KEY=VALUE")
    params: dict[str, Any] = {"state": [s.value for s in state], "tag": tag}
    if app:
        params["app"] = app
    if project:
        params["project"] = project
    with open_client() as client:
        page = client.jobs(params, None if all_ else limit)
    if json_out:
        print_json(page)
        return
    items = page.get("items", [])
    if not items:
        where = f" in project {project}" if project else ""
        err.print("no jobs" + where + (" match" if state or app or tag else " yet"))
        return
    # a project's listing is all of one project; yours may span several
    columns = ["id", "#", "name", "app", "state", "reason", "progress", "created"] + (
        [] if project else ["project"]
    )
    grid = table(*columns, title=f"project {project}" if project else None)
    grid.columns[0].no_wrap = True
    for job in items:
        grid.add_row(
            str(job["id"]),
            str(job.get("run_number", "")),
            Text(job.get("name", "")),
            Text(app_label(job)),
            state_text(job.get("state", "")),
            Text(job.get("reason") or ""),
            percent(job.get("progress")),
            local_time(job.get("created_at"), relative=True),
            *([] if project else [Text(project_label(job, short=True))]),
        )
    out.print(grid)
    if page.get("next_cursor"):
        err.print(f"showing the newest {len(items)}; more with --limit N or --all")


@handle_errors
def status(job_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """Show a job in full, with its history."""
    with open_client() as client:
        job = client.job(job_id)
        events = client.events(job_id)
    if json_out:
        print_json({"job": job, "events": events})
        return
    show_job(job)
    out.print()
    show_events(events)


@handle_errors
def logs(
    job_id: str = ID_ARGUMENT,
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing until the job ends; exit 1 unless it succeeded."
    ),
    timestamps: bool = typer.Option(
        False, "--timestamps", "-t", help="Lead each line with when it came (UTC); not with --follow."
    ),
) -> None:
    """Print a job's log."""
    with open_client() as client:
        if not follow:
            text = client.log(job_id, timestamps)
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
            return
        state = follow_log(client, job_id)
        if state != "succeeded":
            job = client.job(job_id)
            err.print(Text(ended_text(job), style="red"))
            raise typer.Exit(1)


@handle_errors
def cancel(job_id: str = ID_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """Cancel a job: a queued one at once, a running one is stopped (state cancelling, then cancelled)."""
    with open_client() as client:
        job = client.cancel(job_id)
    if json_out:
        print_json(job)
        return
    err.print(Text.assemble(f"job {job['id']} is ", state_text(job["state"])))


@handle_errors
def rerun(
    job_id: str = ID_ARGUMENT,
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait for the new job to end."),
    json_out: bool = JSON_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new job's id."),
    current_image: bool = typer.Option(
        False,
        "--current-image",
        help="A container job: run the image its reference names now, not the one the job ran.",
    ),
    current_inputs: bool = typer.Option(
        False,
        "--current-inputs",
        help="Read the inputs' paths anew, not the exact content the job ran with.",
    ),
) -> None:
    """Run a job again with the same app, parameters and inputs (as a new job). Its inputs are the exact
    content the job read, even if those files changed since, unless --current-inputs. A container job runs
    the image it ran, by content id, unless --current-image."""
    with open_client() as client:
        job = client.rerun(job_id, current_image, current_inputs)
        if wait:
            err.print(f"submitted job {job['id']} (rerun of {job_id})")
            job = wait_for(client, job)
            tail = last_lines(client, job)
    if wait:
        finish(job, json_out, quiet, tail)
    else:
        print_job(job, json_out, quiet)


def register(app: typer.Typer) -> None:
    for command in (submit, jobs, status, logs, cancel, rerun):
        app.command(rich_help_panel="Client")(command)
