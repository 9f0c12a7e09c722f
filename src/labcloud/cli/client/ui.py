"""What the client commands share: consoles, error handling, the client factory, formatting, progress bars."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from labcloud.client.config import ClientConfig, ConfigError, resolve
from labcloud.client.errors import ClientError, field_name
from labcloud.client.progress import transfer_progress as _transfer_progress

if TYPE_CHECKING:
    from labcloud.client.connection import Connection


def _width(stream: TextIO) -> int | None:
    # Piped output is not squeezed into 80 columns (Rich's default off a terminal) unless COLUMNS says so.
    return None if stream.isatty() or os.environ.get("COLUMNS") else 200


out = Console(highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, width=_width(sys.stderr))

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
STATE_STYLES = {
    "queued": "cyan",
    "staging": "blue",
    "running": "bold blue",
    "finishing": "blue",
    "succeeded": "green",
    "failed": "bold red",
    "cancelling": "magenta",
    "cancelled": "magenta",
}

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit to raise."""
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def report(exc: ClientError, token_from_env: bool = False, login_hint: bool = True) -> typer.Exit:
    """Turn a failed request into one line per problem on stderr, and exit code 1."""
    if exc.status == 401 and login_hint:
        hint = (
            "LABCLOUD_TOKEN is set: fix it, or unset it and run labcloud login"
            if token_from_env
            else "run labcloud login"
        )
        detail = exc.detail.rstrip(".") if exc.detail and exc.detail != "Unauthorized" else "not logged in"
        return fail(f"{detail} ({hint})")
    if len(exc.errors) == 1 and str(exc.errors[0].get("msg", "")) in exc.detail:
        # the usual case, one bad field: say which, on the same line
        err.print(
            f"[red]error:[/red] {escape(exc.detail)} ({escape(field_name(exc.errors[0].get('loc', [])))})"
        )
        return typer.Exit(1)
    err.print(f"[red]error:[/red] {escape(exc.detail)}")
    for e in exc.errors:
        err.print(f"  {escape(field_name(e.get('loc', [])))}: {escape(str(e.get('msg', '')))}")
    return typer.Exit(1)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that failed requests and bad config files end it with a clear message."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            raise report(exc, _token_from_env()) from None
        except ConfigError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _token_from_env() -> bool:
    return bool(os.environ.get("LABCLOUD_TOKEN"))


def connect(server: str, token: str | None = None) -> Connection:
    """A connection to ``server`` (httpx is only imported when a command needs the network)."""
    from labcloud.client.connection import Connection

    return Connection(server, token)


def open_client() -> Connection:
    """A client for the configured server and token; without a token, say how to get one."""
    target = resolve(ClientConfig.load())
    if not target.token:
        raise fail(f"not logged in to {target.server} (run labcloud login, or set LABCLOUD_TOKEN)")
    return connect(target.server, target.token)


def dumps(data: Any) -> str:
    """JSON for ``--json`` output: indented, non-ASCII kept."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else."""
    sys.stdout.write(dumps(data) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------- formatting


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(then: datetime, now: datetime | None = None) -> str:
    """How long ago, roughly: ``12s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def local_time(value: str | None, relative: bool = False) -> str:
    """An ISO 8601 timestamp in the local time zone, optionally with its age."""
    moment = parse_time(value)
    if moment is None:
        return value or ""
    text = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} ({age(moment)} ago)" if relative else text


def duration(start: str | None, end: str | None) -> str:
    begin, finish = parse_time(start), parse_time(end)
    if begin is None:
        return ""
    seconds = ((finish or datetime.now(UTC)) - begin).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def percent(progress: float | None) -> str:
    return "" if progress is None else f"{progress * 100:.0f}%"


def compact(value: Any) -> str:
    """A parameter value or a small object on one line: ``name=Ada, times=2``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for name in columns:
        grid.add_column(name, overflow="fold")
    return grid


def key_values(rows: Iterable[tuple[str, str | Text]], title: str | None = None) -> Table:
    """A two-column table of labels and values (empty values are left out)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    if title:
        grid.title = title
    for label, value in rows:
        if value == "" or (isinstance(value, Text) and not value.plain):
            continue
        grid.add_row(label, value if isinstance(value, Text) else Text(value))
    return grid


# ---------------------------------------------------------------------------------------------- progress


def transfer_progress() -> Progress:
    """A progress bar for bytes going up or down (on stderr, gone when done; none in logs and pipes)."""
    return _transfer_progress(err)


def job_progress() -> Progress:
    """A spinner and bar for a job that is being waited for."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[pct]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bars in logs and pipes
    )
