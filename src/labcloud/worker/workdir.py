"""A worker's own folder: one worker process at a time (a lock), and what an earlier one left behind.

Shared by ``labcloud worker`` and ``labcloud celery-worker``: a worker killed mid-job leaves its jobs'
processes running (they are supervised apart from it, to survive a restart). ``labcloud worker`` takes up
again those the server still counts as its own (:mod:`labcloud.worker.resume`); the rest went, or go, to
another runner when their leases run out, so the next worker on the folder stops them and clears it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Collection
from pathlib import Path

from labcloud.execution import process

log = logging.getLogger(__name__)

LOCK_FILE = "worker.lock"


def lock(work_dir: Path) -> int | None:
    """Hold ``work_dir`` for this process (the lock goes with it); None when another process holds it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o700)
    fd = os.open(work_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_leftovers(jobs_dir: Path, grace_s: float, keep: Collection[Path] = ()) -> list[Path]:
    """Stop what earlier workers' jobs left running in ``jobs_dir`` and remove their folders, but for the
    attempts' folders in ``keep`` (taken up again: :mod:`labcloud.worker.resume`) and their logs; the
    folders removed.

    A supervisor still running in an attempt's folder holds its lock (see :func:`process.find_supervisor`),
    whether or not the worker that started it lived to write anything down."""
    jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept = {path.name for path in keep} | {f"{path.name}.log" for path in keep}
    removed = []
    for entry in sorted(jobs_dir.iterdir()):
        if entry.name in kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            handle = process.find_supervisor(entry / "status.json", wait_s=1.0)
            if handle is not None and process.is_alive(handle):
                log.warning("stopping %s, left running by an earlier worker process", entry.name)
                process.cancel(handle)
                deadline = time.monotonic() + grace_s + 5
                while process.is_alive(handle) and time.monotonic() < deadline:
                    time.sleep(0.05)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        else:
            entry.unlink(missing_ok=True)  # an attempt's log
    return removed
