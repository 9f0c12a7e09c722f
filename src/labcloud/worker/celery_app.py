"""The Celery side: one task, ``labcloud.run_job``, that runs a handed-over job through the one runner.

Messages are acknowledged late (after the task returns) and rejected back to the queue when the worker
process dies, so a killed worker's job is delivered again; that second delivery waits while the dead
runner's lease lasts and then takes the job over as a new attempt (the lease fences the old one). Reports go
through the worker API with the job token, never to the database.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery

if TYPE_CHECKING:
    from labcloud.registry.models import Resources
    from labcloud.worker.api import WorkerApi

TASK_NAME = "labcloud.run_job"
RESOURCE_CLASSES = ("small", "large", "gpu")
LARGE_CPUS = 2.0
LARGE_MEMORY_MB = 8192.0


def resource_class(resources: Resources) -> str:
    """small, large or gpu: the Celery queue a job goes to unless a route names one."""
    if resources.gpus > 0:
        return "gpu"
    if resources.cpus > LARGE_CPUS or resources.memory_mb > LARGE_MEMORY_MB:
        return "large"
    return "small"


def queue_names(prefix: str) -> list[str]:
    return [f"{prefix}.{c}" for c in RESOURCE_CLASSES]


def create_app(broker_url: str, visibility_timeout_s: float = 12 * 3600) -> Celery:
    app = Celery("labcloud", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a message is done when its job is, not when a worker receives it
        task_reject_on_worker_lost=True,  # a worker process that dies puts its message back
        worker_prefetch_multiplier=1,  # a busy worker does not sit on messages others could run
        task_ignore_result=True,  # results travel through the worker API
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redis: an unacknowledged message goes back to the queue after this long; longer than any job.
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_NAME)(run_job)
    return app


def run_job(server: str, job_id: str, token: str) -> dict[str, Any]:
    """Run one handed-over job here (configured by ``labcloud celery-worker`` through the environment)."""
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
