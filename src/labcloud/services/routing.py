"""Which executor, and which of its queues (a Slurm partition, a Celery queue), runs a job.

In order: the entrypoint's own ``executor``/``queue``; the first of the installation's routes that
matches the app, entrypoint, labels and resources; entrypoints with labels go to remote workers (pull);
else the default executor. :func:`executors_in_use` are therefore the executors a server loads.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from labcloud.errors import InvalidInput
from labcloud.registry import EntrypointSpec
from labcloud.registry.spec_parts import Resources
from labcloud.settings import Route, Settings

LABELLED = "pull"  # where entrypoints with labels go when no route says otherwise: remote workers


@dataclass(frozen=True)
class Destination:
    executor: str
    queue: str | None = None


def route(
    settings: Settings, app: str, entrypoint: str, spec: EntrypointSpec, resources: Resources
) -> Destination:
    if spec.executor:
        in_use = executors_in_use(settings)
        if spec.executor not in in_use:
            raise InvalidInput(
                f"This entrypoint runs on the '{spec.executor}' executor, which this installation does not "
                f"use (it uses {', '.join(in_use)})."
            )
        return Destination(spec.executor, spec.queue)
    for rule in settings.executor_routes:
        if matches(rule, app, entrypoint, spec.labels, resources):
            return Destination(rule.executor, rule.queue or spec.queue)
    if spec.labels:
        return Destination(LABELLED, spec.queue)
    return Destination(settings.executor, spec.queue)


def executors_in_use(settings: Settings) -> list[str]:
    """Every executor a job can be routed to: the default one, the one for labels, and each route's."""
    names = [settings.executor, LABELLED, *(r.executor for r in settings.executor_routes)]
    return list(dict.fromkeys(names))


def matches(rule: Route, app: str, entrypoint: str, labels: dict[str, str], resources: Resources) -> bool:
    if rule.app is not None and not fnmatch.fnmatchcase(app, rule.app):
        return False
    if rule.entrypoint is not None and rule.entrypoint != entrypoint:
        return False
    if any(labels.get(k) != v for k, v in rule.labels.items()):
        return False
    for key, least in (("cpus", rule.cpus_min), ("memory_mb", rule.memory_mb_min), ("gpus", rule.gpus_min)):
        if least is not None and resources.needs()[key] < least:
            return False
    return True
