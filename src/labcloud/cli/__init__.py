"""The ``labcloud`` command: server side (serve, db, admin, init-config, backup, restore) and client side."""

from __future__ import annotations

import typer

from labcloud.cli import admin, backup, client, db, devices, maintenance, retention, server, worker, workers

app = typer.Typer(
    name="labcloud",
    help="Run a lab's analysis tools as a web service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
server.register(app)
backup.register(app)
client.register(app)
worker.register(app)
workers.register(app)
devices.register(app)
app.add_typer(db.app, name="db")
app.add_typer(admin.app, name="admin")
app.add_typer(retention.app, name="retention")
app.add_typer(maintenance.app, name="maintenance")


def main() -> None:
    app()
