"""The Celery executor's settings: ``celery_*`` in the configuration file, ``LABCLOUD_CELERY_*`` in the
environment (``labcloud celery-worker`` reads the same names for its own options)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from labcloud.execution.executors.celery.task import DEFAULT_QUEUE_PREFIX, DEFAULT_VISIBILITY_TIMEOUT_S
from labcloud.settings import PluginSettings


class CelerySettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="LABCLOUD_CELERY_")

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="The broker jobs are published to (redis://... or amqp://user:pass@host:5672//).",
    )
    visibility_timeout_s: float = Field(
        DEFAULT_VISIBILITY_TIMEOUT_S,
        gt=0,
        description="Redis broker: an unacknowledged job goes back to its queue after this long (longer "
        "than any job runs).",
    )
    queue_prefix: str = Field(
        DEFAULT_QUEUE_PREFIX,
        description="Celery queues are <prefix>.small, .large and .gpu unless a route names one.",
    )
