"""What the Slurm executor and its clients share: a batch job as labcloud asks Slurm for it, how Slurm says
a job ended, and the client interface (:class:`SlurmClient`) that :mod:`.commands` and :mod:`.rest` implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

COMMAND_TIMEOUT_S = 60  # the longest a call to Slurm may take
OUTPUT = "/tmp/%x.out"  # %x: the job name, labcloud-<job id>: unique across clusters and retries
# A job array's tasks: %A_%a, what labcloud calls each task's Slurm job (its engine id), unique in a cluster.
ARRAY_OUTPUT = "/tmp/labcloud-slurm-%A_%a.out"


def output_path(job_name: str, slurm_id: str) -> str:
    """Where a batch job's output went: an array task's by its Slurm id (``1234_5``), others by name."""
    if "_" in slurm_id:
        return ARRAY_OUTPUT.replace("%A_%a", slurm_id)
    return OUTPUT.replace("%x", job_name)


@dataclass(frozen=True)
class Ended:
    state: str  # COMPLETED, FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, ...
    exit_code: str = ""  # "code:signal"


@dataclass(frozen=True)
class BatchJob:
    """One batch job as labcloud asks Slurm for it, whichever way it is submitted."""

    name: str
    script: str
    cpus: int
    memory_mb: int  # 0: the partition's default
    gpus: int
    minutes: int
    partition: str  # "": the default partition
    environment: dict[str, str]  # exactly what the batch job gets (besides Slurm's own variables)
    output: str = OUTPUT
    workdir: str = "/tmp"
    tasks: int = 0  # > 0: a job array of this many tasks (0 to tasks - 1), one labcloud job each


class SlurmClient(Protocol):
    """How labcloud talks to Slurm: its commands (:class:`~.commands.SlurmCommands`), or slurmrestd
    (:class:`~.rest.SlurmRest`)."""

    def submit(self, job: BatchJob) -> str:
        """Slurm's job id (an array's: task N is then ``<id>_N``);
        :class:`~labcloud.execution.executors.engine.EngineRefused` with Slurm's words when it says no."""

    def cancel(self, slurm_id: str) -> None: ...

    def queue(self) -> dict[str, tuple[str, str]]:
        """Slurm id → (state, reason) of this account's jobs that Slurm still lists, an array's tasks each
        as ``<array id>_<task>``, pending ones included."""

    def ended(self, slurm_id: str) -> Ended | None:
        """How Slurm ended a job it no longer lists; None when it does not know the job."""
