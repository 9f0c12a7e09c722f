"""``labcloud worker``: a machine anywhere pulls jobs from a labcloud server over HTTP(S) and runs them.

The agent (:mod:`labcloud.worker.agent`) heartbeats, claims jobs that fit its free capacity and labels,
and runs each through the same runner as the local executor (:mod:`labcloud.execution.runner`),
reporting over the worker API (``docs/worker-protocol.md``) with the job's own short-lived token.
Nothing here touches the network at import time.
"""

from __future__ import annotations

from labcloud.worker.agent import EXIT_REVOKED, EXIT_UNREACHABLE, WorkerAgent, WorkerConfig

__all__ = ["EXIT_REVOKED", "EXIT_UNREACHABLE", "WorkerAgent", "WorkerConfig"]
