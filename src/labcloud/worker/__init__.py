"""``labcloud worker``: a machine anywhere pulls jobs from a labcloud server over HTTP(S) and runs them.

The agent (:mod:`labcloud.worker.agent`) heartbeats, claims jobs that fit its free capacity and labels,
and runs each through the same runner as the local executor (:mod:`labcloud.execution.runner`),
reporting over the worker API (``docs/worker-protocol.md``) with the job's own short-lived token.
:class:`Device` (:mod:`labcloud.worker.device`) is the same protocol for an instrument's own program, which
takes jobs and does them itself. Nothing here touches the network at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labcloud.worker.agent import EXIT_REVOKED, EXIT_UNREACHABLE, WorkerAgent, WorkerConfig
    from labcloud.worker.device import Device, DeviceError, DeviceJob

_MODULES = {
    "EXIT_REVOKED": "agent",
    "EXIT_UNREACHABLE": "agent",
    "WorkerAgent": "agent",
    "WorkerConfig": "agent",
    "Device": "device",
    "DeviceError": "device",
    "DeviceJob": "device",
}
__all__ = [
    "EXIT_REVOKED",
    "EXIT_UNREACHABLE",
    "Device",
    "DeviceError",
    "DeviceJob",
    "WorkerAgent",
    "WorkerConfig",
]


def __getattr__(name: str) -> Any:
    # Lazily: a one-job runner (labcloud.worker.runjob) starts in every Slurm job and needs none of this.
    if name in _MODULES:
        module = importlib.import_module(f"labcloud.worker.{_MODULES[name]}")
        return getattr(module, name)
    raise AttributeError(name)
