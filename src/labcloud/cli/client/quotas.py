"""``labcloud quota`` and ``labcloud usage``: a project's quotas as bars with what is used, held and left;
asking its managers for more, the requests and deciding them; and what the project used, per user, app,
executor or month, as a table, JSON or CSV."""

from __future__ import annotations

import sys
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import typer
from rich.text import Text

from labcloud.cli.client.projects import ANSWER_JSON, SLUG_ARGUMENT
from labcloud.cli.client.ui import (
    JSON_OPTION,
    err,
    fail,
    handle_errors,
    local_time,
    open_client,
    out,
    print_json,
    table,
)
from labcloud.client.projects import moment

quota_app = typer.Typer()

ID_ARGUMENT = typer.Argument(..., metavar="ID", help="The request's id (labcloud quota requests SLUG).")
NOTE_OPTION = typer.Option("", "--note", "-n", help="A word for whoever asked.")
LEVEL_STYLES = {"ok": "green", "warning": "yellow", "exceeded": "bold red"}
BAR_WIDTH = 20


class UsageBy(StrEnum):
    user = "user"
    app = "app"
    executor = "executor"
    month = "month"


def number(value: Any) -> str:
    """A quantity for a table: whole numbers as such, small ones to four decimals (``--json`` has them
    exactly)."""
    amount = float(value or 0)
    if amount == round(amount):
        return str(round(amount))
    if abs(amount) >= 10:
        return f"{amount:.1f}"
    text = f"{amount:.4f}".rstrip("0").rstrip(".")
    return text if text != "0" else "<0.0001"


def bar(percent: float, level: str) -> Text:
    """A bar of ``BAR_WIDTH`` cells, coloured by level, and the percent in figures."""
    filled = min(max(round(percent / 100 * BAR_WIDTH), 0), BAR_WIDTH)
    shown = Text("█" * filled, style=LEVEL_STYLES.get(level, ""))
    shown.append("░" * (BAR_WIDTH - filled), style="dim")
    shown.append(f" {percent:.0f}%")
    return shown


def _period(quota: dict[str, Any]) -> str:
    if quota.get("period") == "allocation":
        return f"allocation {local_time(quota.get('starts_at'))} to {local_time(quota.get('ends_at'))}"
    return str(quota.get("period", ""))


def _who(project: dict[str, Any], user_id: Any) -> str:
    """A member's email for a user id (someone who left keeps their id)."""
    if user_id is None:
        return ""
    for member in project.get("members") or []:
        if str(member.get("user_id")) == str(user_id):
            return str(member.get("email", ""))
    return str(user_id)


def _when(value: str | None, option: str) -> str | None:
    """``--since``/``--until``: a date (its first moment, UTC) or an ISO 8601 time (UTC unless it says)."""
    if not value:
        return None
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            return moment(parse(value))
        except ValueError:
            continue
    raise fail(f"{option}: a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM), not {value!r}")


# ------------------------------------------------------------------------------------------ quotas


@quota_app.callback(invoke_without_command=True)
@handle_errors
def quota(
    ctx: typer.Context,
    project: str = typer.Option(
        "personal", "--project", "-p", metavar="SLUG", help="The project (default: your personal one)."
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """A project's quotas as bars; asking for more, and deciding.

    Each quota shows what ended jobs used this period, what unfinished jobs hold (their worst case), what
    is left, and its level: warning from 80%, exceeded at 100%."""
    if ctx.invoked_subcommand is not None:
        return
    with open_client() as client:
        found = client.quotas(project)
    if json_out:
        print_json({"items": found})
        return
    if not found:
        err.print(f"project {project} has no quotas: its jobs are limited only by what the server can run")
        return
    grid = table("quota", "use", "used", "held", "left", "limit", "unit", "level", "period")
    for q in found:
        level = str(q.get("level", ""))
        grid.add_row(
            Text(str(q.get("resource", ""))),
            bar(float(q.get("percent") or 0), level),
            number(q.get("used")),
            number(q.get("reserved")),
            number(q.get("left")),
            number(q.get("limit")),
            Text(str(q.get("unit", ""))),
            Text(level, style=LEVEL_STYLES.get(level, "")),
            Text(_period(q)),
        )
    out.print(grid)


@quota_app.command("request")
@handle_errors
def request(
    slug: str = SLUG_ARGUMENT,
    resource: str = typer.Argument(
        ..., metavar="RESOURCE", help="cpu_hours, gpu_hours, concurrent_jobs or jobs_per_day."
    ),
    amount: float = typer.Argument(..., metavar="AMOUNT", help="How much more than the limit is now."),
    why: str = typer.Option(..., "--why", help="What it is for (10 to 5000 characters)."),
    json_out: bool = ANSWER_JSON,
) -> None:
    """Ask the project's managers for more of one of its quotas (members and more)."""
    with open_client() as client:
        made = client.request_quota(slug, resource, amount, why)
    if json_out:
        print_json(made)
        return
    out.print(made["id"])
    err.print(
        f"asked for {number(made.get('amount'))} more {resource} in project {slug}; its managers decide "
        f"(labcloud quota requests {slug})"
    )


@quota_app.command("requests")
@handle_errors
def requests(slug: str = SLUG_ARGUMENT, json_out: bool = JSON_OPTION) -> None:
    """A project's quota requests and their decisions, newest first."""
    with open_client() as client:
        found = client.quota_requests(slug)
        project = client.project(slug) if found and not json_out else {}
    if json_out:
        print_json({"items": found})
        return
    if not found:
        err.print(f"nobody has asked for more in project {slug}")
        return
    grid = table("id", "asked", "by", "quota", "more", "state", "decided", "why", "note")
    for r in found:
        state = str(r.get("state", ""))
        style = {"pending": "yellow", "approved": "green", "rejected": "red"}.get(state, "")
        decided = f"{_who(project, r.get('decided_by'))} {local_time(r.get('decided_at'))}".strip()
        grid.add_row(
            Text(str(r.get("id", ""))),
            local_time(r.get("created_at")),
            Text(_who(project, r.get("requested_by"))),
            Text(str(r.get("resource", ""))),
            number(r.get("amount")),
            Text(state, style=style),
            Text(decided if r.get("decided_at") else ""),
            Text(str(r.get("justification", ""))),
            Text(str(r.get("note", ""))),
        )
    out.print(grid)


def _decide(slug: str, request_id: str, approve: bool, note: str, json_out: bool) -> None:
    with open_client() as client:
        done = client.decide(slug, request_id, approve, note)
    if json_out:
        print_json(done)
        return
    more = f"{number(done.get('amount'))} more {done.get('resource', '')}"
    if approve:
        err.print(f"approved: {more} in project {slug} (the limit has grown by as much)")
    else:
        err.print(f"rejected: {more} in project {slug}")


@quota_app.command("approve")
@handle_errors
def approve(
    slug: str = SLUG_ARGUMENT,
    request_id: str = ID_ARGUMENT,
    note: str = NOTE_OPTION,
    json_out: bool = ANSWER_JSON,
) -> None:
    """Approve a pending request: the quota's limit grows by its amount (managers, owners, admins)."""
    _decide(slug, request_id, True, note, json_out)


@quota_app.command("reject")
@handle_errors
def reject(
    slug: str = SLUG_ARGUMENT,
    request_id: str = ID_ARGUMENT,
    note: str = NOTE_OPTION,
    json_out: bool = ANSWER_JSON,
) -> None:
    """Reject a pending request (managers, owners, admins)."""
    _decide(slug, request_id, False, note, json_out)


# ------------------------------------------------------------------------------------------- usage


@handle_errors
def usage(
    slug: str = typer.Argument("personal", metavar="SLUG", help="The project (default: your personal one)."),
    by: UsageBy = typer.Option(UsageBy.user, "--by", "-b", help="A row per user, app, executor or month."),
    since: str | None = typer.Option(None, "--since", help="From this date or time (UTC unless it says)."),
    until: str | None = typer.Option(None, "--until", help="Before this date or time."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV (a header first) instead of a table."),
    json_out: bool = JSON_OPTION,
) -> None:
    """What a project used, per user, app, executor or month.

    Its ended job attempts' CPU- and GPU-hours (wall time x what the job asked for, as Slurm bills), wall
    time and peak memory, biggest first (months in order)."""
    start, end = _when(since, "--since"), _when(until, "--until")
    with open_client() as client:
        if csv_out:
            sys.stdout.write(client.usage_csv(slug, by.value, start, end))
            return
        found = client.usage(slug, by.value, start, end)
    if json_out:
        print_json(found)
        return
    rows = found.get("rows") or []
    if not rows:
        err.print(f"project {slug} used nothing in that time")
        return
    grid = table(by.value, "attempts", "CPU-hours", "GPU-hours", "wall hours", "peak memory MB")
    for row in rows:
        grid.add_row(
            Text(str(row.get(by.value, ""))),
            str(row.get("attempts", 0)),
            number(row.get("cpu_hours")),
            number(row.get("gpu_hours")),
            number(row.get("wall_hours")),
            number(row.get("peak_memory_mb")),
        )
    out.print(grid)


def register(app: typer.Typer) -> None:
    app.add_typer(quota_app, name="quota", rich_help_panel="Client")
    app.command(rich_help_panel="Client")(usage)
