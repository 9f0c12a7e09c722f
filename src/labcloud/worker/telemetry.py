"""What a worker tells the server about its machine with each heartbeat: its host, load, free disk in its
work dir and free memory, whether it sandboxes jobs, and how many it has run. Only what can be read
cheaply; what cannot be read is left out."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Any


def collect(work_dir: Path, sandboxed: bool, completed: int) -> dict[str, Any]:
    """The telemetry of a heartbeat."""
    data: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count() or 0,
        "sandbox": sandboxed,
        "pid": os.getpid(),
        "jobs_completed": completed,
    }
    with contextlib.suppress(OSError):
        data["load1"], data["load5"], data["load15"] = (round(v, 2) for v in os.getloadavg())
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(work_dir)
        data["disk_free_bytes"], data["disk_total_bytes"] = usage.free, usage.total
    with contextlib.suppress(Exception):
        import psutil

        data["memory_available_mb"] = int(psutil.virtual_memory().available / 2**20)
    return data
