"""``labcloud backup`` and ``labcloud restore``: the installation's data, while the server runs, and back."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from labcloud.cli.common import fail, load_settings, say
from labcloud.settings import absolute

HOME_HELP = "The server's data dir (default: $LABCLOUD_HOME, else ./labcloud-data), with its labcloud.toml."


def _use_home(home: Path | None) -> None:
    """``--home`` means what LABCLOUD_HOME means: the data dir, and the configuration file in it."""
    if home is not None:
        os.environ["LABCLOUD_HOME"] = str(absolute(home))


def backup(
    dest: str = typer.Argument(..., help="A folder, a FILE.tar.gz, or s3://bucket/prefix."),
    copy_objects: bool = typer.Option(
        False, "--copy-objects", help="S3 store: copy the stored objects into the backup, not list them."
    ),
    with_secrets: bool = typer.Option(
        False, "--with-secrets", help="Include the signing key and the secrets of the settings."
    ),
    keep_daily: int = typer.Option(
        None, "--keep-daily", min=0, help="Back up into a dated subfolder; keep the newest of N days."
    ),
    keep_weekly: int = typer.Option(
        None, "--keep-weekly", min=0, help="Back up into a dated subfolder; keep the newest of M weeks."
    ),
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Back the installation up while it runs: database, stored files, job logs, app files, settings."""
    from labcloud.services import audit
    from labcloud.services import backup as service

    os.umask(0o077)  # a backup holds password hashes and the files of every user
    _use_home(home)
    settings = load_settings()
    options = service.Options(copy_objects, with_secrets, keep_daily, keep_weekly)
    try:
        with audit.scoped(audit.shell_scope()):
            made = service.create(settings, dest, options, say=say)
    except service.BackupError as exc:
        raise fail(str(exc)) from None
    for name in made.pruned:
        say(f"removed {name} (retention)")
    typer.echo(made.place)


def restore(
    src: str = typer.Argument(..., help="A backup: its folder, its .tar.gz file, or its s3://bucket/prefix."),
    allow_missing_objects: bool = typer.Option(
        False,
        "--allow-missing-objects",
        help="Restore even when stored objects the database refers to are not in the backup or the store.",
    ),
    home: Path = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Restore a backup into a new, empty home (and empty database), then migrate it to this version."""
    from labcloud.services import audit
    from labcloud.services import backup_restore as service

    os.umask(0o077)
    _use_home(home)
    settings = load_settings()
    try:
        with audit.scoped(audit.shell_scope()):
            done = service.restore(settings, src, allow_missing_objects=allow_missing_objects, say=say)
    except service.BackupError as exc:
        raise fail(str(exc)) from None
    except BaseException:
        say(
            f"the restore stopped part way: empty the home {settings.home} (and the database) before trying "
            "again"
        )
        raise
    say(f"{done.objects} stored object(s) restored")
    if done.uploads_dropped:
        say(f"{done.uploads_dropped} upload(s) in progress at backup time dropped: their clients start again")
    if done.missing_objects:
        say(f"warning: {len(done.missing_objects)} object(s) were missing: their files have no content")
    for note in done.notes:
        say(f"note: {note}")
    say(f"restored into {settings.home}; start the server with the same settings")


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
