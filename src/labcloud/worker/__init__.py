"""``labcloud worker``: a machine anywhere pulls jobs from a labcloud server over HTTP(S) and runs them.

The agent (:mod:`labcloud.worker.agent`) heartbeats, claims jobs that fit its free capacity and labels,
and runs each through the same runner as the local executor (:mod:`labcloud.execution.runner`),
reporting over the worker API (``docs/worker-protocol.md``) with the job's own short-lived token.
Nothing here touches the network at import time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXIT_REVOKED", "EXIT_UNREACHABLE", "WorkerAgent", "WorkerConfig"]


def __getattr__(name: str) -> Any:
    # Lazily: a one-job runner (labcloud.worker.runjob) starts in every Slurm job and needs none of this.
    if name in __all__:
        from labcloud.worker import agent

        return getattr(agent, name)
    raise AttributeError(name)
