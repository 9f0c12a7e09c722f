"""``labcloud retention``: apply the retention policies now, or see what they would delete."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import typer

from labcloud.cli.common import load_settings, say
from labcloud.settings import absolute

app = typer.Typer(help="Retention of ended jobs' folders, outputs and records.", no_args_is_help=True)


@app.command("run")
def run(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the deletions and the summary as JSON."),
    home: Path = typer.Option(
        None, "--home", help="The server's data dir (default: $LABCLOUD_HOME, else ./labcloud-data)."
    ),
) -> None:
    """Delete what the retention policies say is due, and expire abandoned uploads.

    The policies: the retention_* settings and the apps' retention blocks. Each deletion is logged."""
    from labcloud.db.engine import Database
    from labcloud.registry import AppRegistry, bundled_apps_dir
    from labcloud.services import retention
    from labcloud.storage import open_storage

    if home is not None:
        os.environ["LABCLOUD_HOME"] = str(absolute(home))
    settings = load_settings()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger(retention.__name__).setLevel(settings.log_level.upper())  # each deletion, the summary
    db = Database(settings)
    try:
        apps = AppRegistry([bundled_apps_dir(), settings.effective_apps_dir])
        for problem in apps.problems():
            say(f"warning: {problem} (that app gets the installation's retention)")
        report = retention.run(db, open_storage(settings), settings, apps, dry_run=dry_run)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    what = {"job": "job", "outputs": "outputs of", "folder": "folders of"}
    deleted = "would delete" if dry_run else "deleted"
    for item in report.done:
        typer.echo(
            f"{deleted} {what[item.action]} {item.job_id}  app {item.app}  "
            f"ended {item.ended_at:%Y-%m-%d %H:%M}  {item.files} file(s)  {item.bytes} bytes"
        )
    for upload in report.uploads:
        verb = "would expire" if dry_run else "expired"
        typer.echo(f"{verb} {upload['kind']} upload {upload['id']}  {upload['path']}")
    for folder in report.orphan_folders:
        typer.echo(f"{'would remove' if dry_run else 'removed'} leftover folder {folder}")
    for item, why in report.skipped:
        say(f"kept {item.job_id} ({item.action}): {why}")
    say(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in report.summary().items()))
