"""The Celery task both sides agree on: the server's executor (:mod:`.executor`) publishes it, and
``labcloud celery-worker`` (:mod:`labcloud.worker.celery_app`) runs it.

- its name, :data:`TASK_NAME`, and its arguments, :class:`TaskArgs` (positional, as JSON);
- its queues: ``<prefix>.small``, ``.large`` or ``.gpu`` by the job's :func:`resource_class`, unless a route
  or the entrypoint names one;
- how both sides configure Celery (:func:`celery_app`).

It imports nothing of labcloud, so that neither side pulls in the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from celery import Celery

if TYPE_CHECKING:
    from labcloud.registry.spec_parts import Resources

TASK_NAME = "labcloud.run_job"
RESOURCE_CLASSES = ("small", "large", "gpu")
LARGE_CPUS = 2.0
LARGE_MEMORY_MB = 8192.0
DEFAULT_QUEUE_PREFIX = "labcloud"
DEFAULT_VISIBILITY_TIMEOUT_S = 12 * 3600.0


class TaskArgs(NamedTuple):
    """The task's arguments, in this order."""

    server: str  # where the runner reaches the server's worker API
    job_id: str
    token: str  # the hand-over job token: good until a runner takes the job


def resource_class(resources: Resources) -> str:
    """small, large or gpu: the Celery queue a job goes to unless a route names one."""
    if resources.gpus > 0:
        return "gpu"
    if resources.cpus > LARGE_CPUS or resources.memory_mb > LARGE_MEMORY_MB:
        return "large"
    return "small"


def queue_name(prefix: str, resources: Resources) -> str:
    return f"{prefix}.{resource_class(resources)}"


def queue_names(prefix: str) -> list[str]:
    """Every resource class's queue: what a worker takes jobs from unless told otherwise."""
    return [f"{prefix}.{c}" for c in RESOURCE_CLASSES]


def celery_app(broker_url: str, visibility_timeout_s: float = DEFAULT_VISIBILITY_TIMEOUT_S) -> Celery:
    """A Celery app as both sides configure it (the worker then registers the task on it)."""
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
    return app
