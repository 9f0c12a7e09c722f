"""The Celery side: one task, ``labcloud.run_job``, that runs a handed-over job through the one runner.

The task's name, arguments and queues are the contract of :mod:`labcloud.execution.executors.celery.task`,
all that this imports of the server's side. Messages are acknowledged late (after the task returns) and
rejected back to the queue when the worker process dies, so a killed worker's job is delivered again; that
second delivery waits while the dead runner's lease lasts and then takes the job over as a new attempt (the
lease fences the old one). Reports go through the worker API with the job token, never to the database.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labcloud.execution.executors.celery.task import (
    DEFAULT_VISIBILITY_TIMEOUT_S,
    TASK_NAME,
    celery_app,
)

if TYPE_CHECKING:
    from celery import Celery

    from labcloud.worker.api import WorkerApi


def create_app(broker_url: str, visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S) -> Celery:
    """The worker's Celery app: the shared configuration, and the task."""
    app = celery_app(broker_url, visibility_timeout_s)
    app.task(name=TASK_NAME)(run_job)
    return app


def run_job(server: str, job_id: str, token: str) -> dict[str, Any]:
    """Run one handed-over job here (configured by ``labcloud celery-worker`` through the environment); the
    arguments are a :class:`~labcloud.execution.executors.celery.task.TaskArgs`."""
    from labcloud.execution import engine_options
    from labcloud.settings import ContainerSettings
    from labcloud.worker.single import run_one

    outcome = run_one(
        _api(server),
        job_id,
        token,
        work_dir=Path(os.environ.get("LABCLOUD_RUNNER_WORK_DIR", "/tmp/labcloud-runs")),
        sandbox=os.environ.get("LABCLOUD_RUNNER_SANDBOX", "auto"),  # type: ignore[arg-type]
        job_user=os.environ.get("LABCLOUD_RUNNER_JOB_USER", "nobody"),
        grace_s=float(os.environ.get("LABCLOUD_RUNNER_KILL_GRACE", "5")),
        wait_held_s=float(os.environ.get("LABCLOUD_RUNNER_WAIT_HELD_S", "3600")),
        engines=engine_options.probe(ContainerSettings()),  # one probe per worker process (its settings are)
        top=Path(os.environ["LABCLOUD_RUNNER_TOP"]) if os.environ.get("LABCLOUD_RUNNER_TOP") else None,
    )
    return {"ran": outcome.ran, "state": outcome.state, "message": outcome.message}


_apis: dict[str, WorkerApi] = {}
_apis_lock = threading.Lock()


def _api(server: str) -> WorkerApi:
    """One pooled client per server for the whole worker process (it is thread-safe): a new one per task
    would cost a TLS context and a connection each time."""
    with _apis_lock:
        api = _apis.get(server)
        if api is None:
            from labcloud.worker.api import WorkerApi

            api = _apis[server] = WorkerApi(server)
        return api
