"""Moved to :mod:`labcloud.http.downloads`. Kept only for ``api/routers/worker_api.py``, which is being
split and imports it; remove once that module imports :mod:`labcloud.http.downloads` itself."""

from labcloud.http.downloads import send_file

__all__ = ["send_file"]
