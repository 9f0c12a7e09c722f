"""What a worker writes down in an attempt's folder to take the attempt up again after a restart
(:mod:`labcloud.worker.resume`): the assignment, with its job token, and the server it came from.

The attempt's folder is the worker's (0700; the job sees only ``work/`` below it, and a container only its
inputs and output); the note is 0600, written without following a link and read back only when the worker's
own user owns it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD = "resume.json"
MAX_RECORD_BYTES = 16 << 20  # an assignment with many input files is large, never this large


def save(job_dir: Path, server: str, assignment: dict[str, Any]) -> None:
    """Write down what a later worker process needs to take the attempt up again (never fails the run)."""
    data = json.dumps({"server": server, "assignment": assignment}).encode()
    try:
        folder = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot note %s for a restart: %s", job_dir.name, exc)
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(RECORD, dir_fd=folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(RECORD, flags, 0o600, dir_fd=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        log.warning("cannot note %s for a restart: %s", job_dir.name, exc)
    finally:
        os.close(folder)


def load(job_dir: Path, server: str) -> dict[str, Any] | None:
    """The assignment noted in ``job_dir`` by a worker of the same server, else None."""
    try:
        fd = os.open(job_dir / RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_size > MAX_RECORD_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            record = json.loads(fh.read())
        assignment = record["assignment"]
        if record["server"] != server or f"{assignment['id']}-{int(assignment['attempt'])}" != job_dir.name:
            return None
        return dict(assignment)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
