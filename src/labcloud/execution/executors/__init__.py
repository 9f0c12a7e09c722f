"""Executors as plugins: a name and the class that implements it. The scheduler sees only the interface in
:mod:`.base`; adding an engine (Kubernetes, AWS Batch) means one module (or package) and one line here.

A server loads the executors its jobs can be routed to (:func:`load`; see
:func:`labcloud.services.routing.executors_in_use`). A plugin with settings of its own declares them in its
own module (a :class:`~labcloud.settings.PluginSettings`, named by its class's ``settings_model``). Before
the server starts, :func:`check` refuses a configuration that names an executor that does not exist, or
gives one in use settings it cannot take, with every problem in one message. Importing this package imports
no plugin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labcloud.db.engine import Database
    from labcloud.execution.executors.base import Executor
    from labcloud.settings import Settings
    from labcloud.storage.base import Storage

PLUGINS: dict[str, str] = {
    "local": "labcloud.execution.executors.local:LocalExecutor",
    "pull": "labcloud.execution.executors.pull:PullExecutor",
    "slurm": "labcloud.execution.executors.slurm.executor:SlurmExecutor",
    "celery": "labcloud.execution.executors.celery.executor:CeleryExecutor",
}


class ExecutorConfigError(ValueError):
    """The configuration names an executor that does not exist, or gives one settings it cannot take."""


def plugin_class(name: str) -> type[Executor]:
    module, _, attr = PLUGINS[name].partition(":")
    cls: type[Executor] = getattr(importlib.import_module(module), attr)
    return cls


def load(
    settings: Settings, db: Database, notify: Callable[[], None], storage: Storage
) -> dict[str, Executor]:
    """Every executor in use, by name (after :func:`check`)."""
    from labcloud.services.routing import executors_in_use

    check(settings)
    return {name: plugin_class(name)(settings, db, notify, storage) for name in executors_in_use(settings)}


def check(settings: Settings) -> None:
    """Raise :class:`ExecutorConfigError` naming every unknown executor (and the setting that names it) and
    every bad setting of the executors in use."""
    from labcloud.services.routing import executors_in_use

    named = [(settings.executor, "executor")]
    named += [(route.executor, f"executor_routes[{i}]") for i, route in enumerate(settings.executor_routes)]
    problems = [
        f"unknown executor {name!r} in {where}; one of {', '.join(PLUGINS)}"
        for name, where in named
        if name not in PLUGINS
    ]
    if problems:
        raise ExecutorConfigError("; ".join(problems))
    for name in executors_in_use(settings):
        problems += _settings_problems(name, plugin_class(name))
    if problems:
        raise ExecutorConfigError("; ".join(problems))


def _settings_problems(name: str, cls: type[Executor]) -> list[str]:
    from pydantic import ValidationError

    model = cls.settings_model
    if model is None:
        return []
    try:
        model()
    except ValidationError as exc:
        return [
            f"{model.key('.'.join(map(str, e['loc'])))}: {e['msg']}"
            if e["loc"]
            else f"the {name} executor: {e['msg']}"
            for e in exc.errors()
        ]
    return []
