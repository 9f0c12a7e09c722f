"""How one attempt at a job ended, in the runner's words: what every runner (the server's, a worker's, a
Slurm or Celery node's) reports, and what :func:`labcloud.services.lifecycle.record_end` turns into the job's
state. Plain data: the runner below the services defines what it says, the services interpret it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# The supervisor's outcomes, and two of the runner's own: the inputs could not be staged, and the run was
# lost (its supervisor vanished without a result).
Outcome = Literal[
    "exited",
    "timeout",
    "out_of_memory",
    "cancelled",
    "start_failed",
    "staging_failed",
    "image_unavailable",
    "lost",
]


@dataclass(frozen=True)
class RunEnd:
    """How one attempt ended, wherever it ran.

    ``problem``: the run ended but labcloud could not keep all of its outputs (a system failure, the job
    fails with ``system_error``). ``note``: outputs the job left that were not kept on purpose (links,
    fifos...), added to the job's message.
    """

    outcome: Outcome
    exit_code: int | None = None
    message: str = ""
    usage: dict[str, float] = field(default_factory=dict)
    problem: str | None = None
    note: str | None = None
    image: str | None = None  # the content id of the container image that ran
    # A task's steps: each one's exit code and times (seconds since the epoch), in order.
    steps: list[dict[str, Any]] | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "exited" and self.exit_code == 0 and self.problem is None
