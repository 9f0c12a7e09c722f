"""What both ends of the worker protocol (docs/worker-protocol.md) must agree on beyond the bodies: the
features a server names in its assignments, so that a newer worker uses them only with a server that has
them, and their bounds."""

from __future__ import annotations

FINISH_LOG = "finish_log"  # a finish may carry the log's last bytes (no log call before it)
FINISH_LOG_MAX = 64 * 1024  # the most bytes of the log a finish may carry
