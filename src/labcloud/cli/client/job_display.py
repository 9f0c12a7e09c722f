"""How the job commands show a job on the terminal (its fields, history, the end with the log's last
lines) and follow it (waiting with a progress line, the live log)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from labcloud.cli.client.ui import (
    compact,
    duration,
    err,
    job_progress,
    key_values,
    local_time,
    out,
    percent,
    print_json,
    state_text,
    table,
)
from labcloud.client.errors import ClientError

if TYPE_CHECKING:
    from labcloud.client.connection import Connection


PERSONAL_SLUG_PREFIX = "user-"
TAIL_LINES = 10


def app_label(job: dict[str, Any]) -> str:
    return f"{job.get('app', '')}:{job.get('version', '')}"


def project_label(job: dict[str, Any], short: bool = False) -> str:
    """The job's project; a personal one (only those have ``user-`` slugs) as ``personal``, with its slug
    unless ``short``."""
    slug = str(job.get("project") or "")
    if not slug.startswith(PERSONAL_SLUG_PREFIX):
        return slug
    return "personal" if short else f"personal ({slug})"


def _where(job: dict[str, Any]) -> str:
    """The executor, and its queue (a Slurm partition, a Celery queue) when there is one."""
    executor = str(job.get("executor") or "")
    return f"{executor} ({job['queue']})" if executor and job.get("queue") else executor


def _job_rows(job: dict[str, Any]) -> list[tuple[str, str | Text]]:
    state = state_text(job.get("state", ""))
    if job.get("reason"):
        state.append(f" ({job['reason']})")
    attempts = job.get("attempts")
    if attempts is not None and job.get("max_attempts"):
        attempts = f"{attempts} of {job['max_attempts']}"
    return [
        ("id", job.get("id", "")),
        ("name", job.get("name", "")),
        ("run", f"#{job.get('run_number', '')}"),
        ("app", f"{app_label(job)}:{job.get('entrypoint', '')}"),
        ("state", state),
        ("message", job.get("message", "")),
        ("exit code", "" if job.get("exit_code") is None else str(job["exit_code"])),
        ("progress", percent(job.get("progress"))),
        ("attempts", "" if attempts is None else str(attempts)),
        ("project", project_label(job)),
        ("runs on", _where(job)),
        ("params", compact(job.get("params")) if job.get("params") else ""),
        ("inputs", compact(job.get("inputs")) if job.get("inputs") else ""),
        ("resources", compact(job.get("resources")) if job.get("resources") else ""),
        ("tags", compact(job.get("tags")) if job.get("tags") else ""),
        ("usage", compact(job.get("usage")) if job.get("usage") else ""),
        ("rerun of", job.get("rerun_of") or ""),
        ("created", local_time(job.get("created_at"), relative=True)),
        ("started", local_time(job.get("started_at"))),
        ("finished", local_time(job.get("finished_at"))),
        ("run time", duration(job.get("started_at"), job.get("finished_at"))),
    ]


def show_job(job: dict[str, Any]) -> None:
    out.print(key_values(_job_rows(job)))


def show_events(events: list[dict[str, Any]]) -> None:
    grid = table("at", "change", "reason", "message", title="history")
    for event in events:
        change = Text(event.get("from_state") or "·")
        change.append(" → ")
        change.append_text(state_text(event.get("to_state", "")))
        grid.add_row(
            local_time(event.get("at")),
            change,
            Text(event.get("reason") or ""),
            Text(event.get("message", "")),
        )
    out.print(grid)


def ended_text(job: dict[str, Any]) -> str:
    text = f"job {job['id']} {job['state']}"
    if job.get("reason"):
        text += f" ({job['reason']}"
        text += f", exit code {job['exit_code']})" if job.get("exit_code") is not None else ")"
    if job.get("message"):
        text += f": {job['message']}"
    return text


# ---------------------------------------------------------------------------------------------- waiting


def _wait_label(job: dict[str, Any]) -> str:
    message = (job.get("message") or "").replace("\n", " ")
    label = f"{str(job['id'])[:8]} {job['state']}"
    return f"{label}: {message[:60]}" if message else label


def wait_for(client: Connection, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the job until it ends, with a spinner and its progress bar; returns its last state."""
    with job_progress() as progress:
        task = progress.add_task(_wait_label(job), total=None, pct="")

        def show(job: dict[str, Any]) -> None:
            fraction = job.get("progress")
            progress.update(
                task,
                description=_wait_label(job),
                total=None if fraction is None else 1.0,
                completed=fraction or 0,
                pct=percent(fraction),
            )

        return client.wait(job, on_update=show)


def follow_log(client: Connection, job_id: str) -> str:
    """Print the log as it grows until the job ends; returns the final state."""
    state = ""
    for event in client.follow_log(job_id):
        if event.event == "log":
            sys.stdout.write("".join(line + "\n" for line in event.data))
            sys.stdout.flush()
        elif event.event == "end":
            state = event.end_state()
    return state


def print_job(job: dict[str, Any], json_out: bool, quiet: bool) -> None:
    """A job as JSON, as its id alone (``--quiet``), or in full."""
    if json_out:
        print_json(job)
    elif quiet:
        out.print(str(job["id"]))
    else:
        show_job(job)


def finish(job: dict[str, Any], json_out: bool, quiet: bool = False, log_tail: str = "") -> None:
    """Print a job that was waited for; exit 1 unless it succeeded (showing the end of its log)."""
    print_job(job, json_out, quiet)
    if job["state"] != "succeeded":
        lines = log_tail.rstrip("\n").splitlines()[-TAIL_LINES:]
        if lines:
            err.print(Text(f"last lines of the log (labcloud logs {job['id']}):", style="dim"))
            err.print(Text("\n".join(lines)))
        err.print(Text(ended_text(job), style="red"))
        raise typer.Exit(1)


def last_lines(client: Connection, job: dict[str, Any]) -> str:
    if job["state"] != "failed":
        return ""
    try:
        return client.log(str(job["id"]))
    except ClientError:
        return ""
