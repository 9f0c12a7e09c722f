"""The Celery executor: each job is a ``labcloud.run_job`` task on a queue per resource class.

Queues are ``<prefix>.small``, ``.large`` and ``.gpu`` (see :mod:`.task`, the contract with the workers)
unless a route or the entrypoint names one. ``labcloud celery-worker`` consumes them. The broker only
delivers: the task takes its job through the worker API, and the job's lease, renewed by the runner's
heartbeats, is what notices a dead worker (the job is queued again) and fences duplicate deliveries.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from labcloud.db.models import Job
from labcloud.execution.executors.celery.settings import CelerySettings
from labcloud.execution.executors.celery.task import TASK_NAME, TaskArgs, celery_app, queue_name
from labcloud.execution.executors.engine import EngineExecutor
from labcloud.services.executor_refs import CeleryRef


class CeleryExecutor(EngineExecutor):
    name = "celery"
    ref_type = CeleryRef
    settings_model = CelerySettings
    _app: Celery | None = None
    _app_lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = CelerySettings()

    @property
    def app(self) -> Celery:
        with self._app_lock:
            if self._app is None:
                self._app = celery_app(self.options.broker_url, self.options.visibility_timeout_s)
            return self._app

    def queue_for(self, job: Job) -> str:
        return job.queue or queue_name(self.options.queue_prefix, job.resources)

    def waiting_message(self, queue: str) -> str:
        return f"waiting in Celery queue {queue}"

    def send(self, job: Job, token: str, queue: str) -> str:
        task_id = f"{job.id}.{job.attempts}"
        self.app.send_task(
            TASK_NAME,
            args=list(TaskArgs(self.settings.effective_runner_url, str(job.id), token)),
            queue=queue,
            task_id=task_id,
        )
        return task_id

    def shutdown(self) -> None:
        super().shutdown()
        with self._app_lock:
            if self._app is not None:
                self._app.close()
                self._app = None
