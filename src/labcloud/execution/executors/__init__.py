"""Executors as plugins: a name and the class that implements it. The scheduler sees only the interface in
:mod:`.base`; adding an engine (Kubernetes, AWS Batch) means one module and one line here."""

from __future__ import annotations

import importlib
from typing import Any

PLUGINS: dict[str, str] = {
    "local": "labcloud.execution.executors.local:LocalExecutor",
    "pull": "labcloud.execution.executors.pull:PullExecutor",
    "slurm": "labcloud.execution.executors.slurm.executor:SlurmExecutor",
    "celery": "labcloud.execution.executors.celery.executor:CeleryExecutor",
}


def plugin_class(name: str) -> Any:
    module, _, attr = PLUGINS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
