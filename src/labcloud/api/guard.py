"""Moved to :mod:`labcloud.http.guard`. Kept only for ``api/routers/worker_api.py``, which is being split
and imports it; remove once that module imports :mod:`labcloud.http.guard` itself."""

from labcloud.http.guard import GuardedRoute, gate, read_body

__all__ = ["GuardedRoute", "gate", "read_body"]
