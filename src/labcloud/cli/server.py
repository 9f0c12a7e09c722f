"""``labcloud serve`` and ``labcloud init-config``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from labcloud.cli.common import console, fail, load_settings
from labcloud.settings import absolute, config_path_from_env, render_config_file
from labcloud.telemetry import logs

log = logging.getLogger("labcloud.serve")


def serve(
    host: str = typer.Option(None, help="Address to listen on (default from config: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port to listen on (default from config: 8000)."),
) -> None:
    """Start the labcloud service."""
    import uvicorn

    os.umask(0o077)  # everything the server writes (database, files, logs) is its own user's alone

    from labcloud.api.app import create_app
    from labcloud.execution.executors import ExecutorConfigError, check
    from labcloud.runtime import Runtime, SchemaOutOfDate, database_location, prepare_database

    settings = load_settings()
    try:
        check(settings)  # every executor in use exists and takes its settings: before anything starts
    except ExecutorConfigError as exc:
        raise fail(f"configuration: {exc}", 2) from None
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    logs.configure(settings.log_level, settings.log_format)
    log.info("data dir %s; database %s", settings.home, database_location(settings))
    # Check the schema (and migrate SQLite) before listening: a refusal is a clear message, not a traceback.
    preflight = Runtime.create(settings)
    try:
        prepare_database(preflight)
    except SchemaOutOfDate as exc:
        raise fail(str(exc)) from None
    finally:
        preflight.db.dispose()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_keep_alive=settings.http_keep_alive_s,
        # JSON: uvicorn's own lines (access log too) go through labcloud's handler, with the request id.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        proxy_headers=False,  # the app believes X-Forwarded-* only from settings.trusted_proxies
    )


def init_config(
    path: Path = typer.Option(
        None, help="Where to write (default: $LABCLOUD_CONFIG or $LABCLOUD_HOME/labcloud.toml)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a configuration file with freshly generated secrets (mode 0600)."""
    target = absolute(path) if path else config_path_from_env()
    if target.exists() and not force:
        raise fail(f"{target} exists; pass --force to replace it (its secrets would change).")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render_config_file())
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    console.print(f"wrote {target} (mode 0600)")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("init-config")(init_config)
