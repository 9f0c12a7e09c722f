"""``labcloud maintenance on|off|status``: maintenance mode, from the server's shell (the configured home and
database; every replica of that database follows within two seconds)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from labcloud.cli.common import fail, load_settings, say
from labcloud.settings import absolute

app = typer.Typer(
    help="Maintenance mode: refuse new jobs and uploads (503 with the message), let running work finish.",
    no_args_is_help=True,
)
HOME_HELP = "The server's data dir (default: $LABCLOUD_HOME, else ./labcloud-data), with its labcloud.toml."


def _switch(enabled: bool, message: str | None, retry_after: int | None, home: Path | None) -> dict[str, Any]:
    from labcloud.db.engine import Database
    from labcloud.errors import LabcloudError
    from labcloud.runtime import SchemaOutOfDate
    from labcloud.services import audit, maintenance

    settings = _settings(home)
    db = Database(settings)
    try:
        _check_schema(settings, db)
        with audit.scoped(audit.shell_scope()):
            state = maintenance.switch(db, enabled, message, retry_after, where="option")
    except SchemaOutOfDate as exc:
        raise fail(str(exc)) from None
    except LabcloudError as exc:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors or []) or exc.detail
        raise fail(problems) from None
    finally:
        db.dispose()
    return state.as_dict()


def _settings(home: Path | None) -> Any:
    if home is not None:
        os.environ["LABCLOUD_HOME"] = str(absolute(home))
    return load_settings()


def _check_schema(settings: Any, db: Any) -> None:
    from labcloud.db import migrate
    from labcloud.runtime import SchemaOutOfDate

    if not migrate.is_up_to_date(settings, db.engine):
        raise SchemaOutOfDate(
            "The database schema is not up to date: run 'labcloud db upgrade' (or start the server) first."
        )


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(state, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        return
    if state["enabled"]:
        typer.echo(f"maintenance: on (Retry-After {state['retry_after_s']} s)")
        typer.echo(f"message: {state['message']}")
    else:
        typer.echo("maintenance: off")
    if state["changed_at"] is not None:
        typer.echo(f"changed: {state['changed_at']:%Y-%m-%d %H:%M:%S} UTC by {state['changed_by']}")


@app.command("on")
def on(
    message: str = typer.Option(None, "--message", "-m", help="What refused requests and the banner say."),
    retry_after: int = typer.Option(
        None, "--retry-after", help="Seconds clients are told to wait (1-604800)."
    ),
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Turn maintenance mode on: new submits and uploads get 503, workers and the dispatcher drain."""
    state = _switch(True, message, retry_after, home)
    _show(state, as_json)
    if not as_json:
        say("running jobs continue; new jobs and uploads are refused until 'labcloud maintenance off'")


@app.command("off")
def off(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Turn maintenance mode off: everything resumes."""
    _show(_switch(False, None, None, home), as_json)


@app.command("status")
def status(
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Whether maintenance mode is on, with its message."""
    from labcloud.db.engine import Database
    from labcloud.runtime import SchemaOutOfDate
    from labcloud.services import maintenance

    settings = _settings(home)
    db = Database(settings)
    try:
        _check_schema(settings, db)
        with db.session() as session:
            state = maintenance.read(session).as_dict()
    except SchemaOutOfDate as exc:
        raise fail(str(exc)) from None
    finally:
        db.dispose()
    _show(state, as_json)
