"""One attempt's container as any engine runs it: what it runs with (:class:`ContainerRun`), its name and
labels (by which a restarted worker finds its containers again), and the folders it mounts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INPUTS_MOUNT = "/labcloud/inputs"
OUTPUT_MOUNT = "/labcloud/output"
NAME_PREFIX = "labcloud-"
JOB_LABEL = "org.labcloud.job"
ATTEMPT_LABEL = "org.labcloud.attempt"


@dataclass(frozen=True)
class ContainerRun:
    """One attempt's container."""

    job_id: str
    attempt: int
    image: str
    command: Sequence[str]
    user: str
    workdir: str
    env_file: Path  # the container's variables (NAME=value lines), never on the command line
    inputs: Path | None  # the staged inputs folder (mounted read-only), None when there are none
    output: Path | None  # the only writable folder (an app's); None for a task's step, which has mounts
    cpus: float
    memory_mb: int
    gpus: int = 0
    network: bool = False
    # A task's step: its folders (host folder or file, path in the container, read-only), its number (in
    # its container's name), whether it reads standard input, and its network ("" for network above).
    mounts: tuple[tuple[Path, str, bool], ...] = ()
    step: int | None = None
    interactive: bool = False
    network_mode: str = ""

    @property
    def name(self) -> str:
        return container_name(self.job_id, self.attempt, self.step)


def cgroup_parent(name: str) -> str:
    return f"/labcloud/{name}"


def container_name(job_id: str, attempt: int, step: int | None = None) -> str:
    """``labcloud-<job>-<attempt>``, and ``.<step>`` after it for a task's step."""
    return f"{NAME_PREFIX}{job_id}-{attempt}" + ("" if step is None else f".{step}")


def parse_name(name: str) -> tuple[str, int] | None:
    """(job id, attempt) of a container labcloud named (a task's step's too), else None."""
    if not name.startswith(NAME_PREFIX):
        return None
    job_id, _, attempt = name[len(NAME_PREFIX) :].rpartition("-")
    attempt = attempt.partition(".")[0]
    return (job_id, int(attempt)) if attempt.isdigit() and job_id else None


def is_job_id(text: str) -> bool:
    """Whether a name's job id (see :func:`parse_name`) could be a job's: a UUID."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def bind_option(source: Path, target: str, readonly: bool) -> str:
    text = str(source)
    if any(c in text + target for c in ',"\n') or not source.is_absolute():
        raise ValueError(f"a folder that cannot be mounted in a container: {text!r} at {target!r}")
    return f"--mount=type=bind,source={text},target={target}" + (",readonly" if readonly else "")
