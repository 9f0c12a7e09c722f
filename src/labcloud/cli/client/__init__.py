"""The client side of ``labcloud``: commands that talk HTTP to a labcloud server.

The public Python client :mod:`labcloud.client` does the talking: its ``Connection`` (plain JSON data) is
imported only when a command runs; the command modules parse arguments and print. Nothing here touches the
network at import time.
"""

from __future__ import annotations

import typer

from labcloud.cli.client import account, apps, data, device_sessions, jobs, projects, quotas, sweeps
from labcloud.client.errors import ClientError

__all__ = ["ClientError", "register"]


def register(app: typer.Typer) -> None:
    """Add login, logout, whoami, apps, upload, files, submit, jobs, status, logs, cancel, rerun, download,
    projects, sessions, sweep, quota, usage."""
    account.register(app)
    apps.register(app)
    data.register(app)
    jobs.register(app)
    projects.register(app)
    device_sessions.register(app)
    sweeps.register(app)
    quotas.register(app)
