"""Where jobs run and in which order: the default executor, routes, default quotas, fair share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

QuotaResource = Literal["cpu_hours", "gpu_hours", "concurrent_jobs", "jobs_per_day"]


class DefaultQuota(BaseModel):
    """A quota every project gets unless an admin sets its own."""

    model_config = ConfigDict(extra="forbid")

    limit: float = Field(ge=0)
    period: Literal["monthly", "daily", "none"] = "monthly"


class Route(BaseModel):
    """One routing rule: every condition given must hold; ``executor`` and ``queue`` say where to."""

    model_config = ConfigDict(extra="forbid")

    app: str | None = Field(None, description="App name; shell-style wildcards allowed (gpu-*).")
    entrypoint: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="The entrypoint's labels include these.")
    cpus_min: float | None = None
    memory_mb_min: float | None = None
    gpus_min: float | None = None
    executor: str
    queue: str | None = Field(None, description="Slurm partition or Celery queue.")


class DispatchSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings`: which executor takes a job, and which job goes
    first."""

    executor: str = Field(
        "local",
        description="Where jobs run unless a route says otherwise: local (this machine), pull (remote "
        "workers pull them), slurm (sbatch to a Slurm cluster) or celery (a Celery worker fleet). Checked "
        "when the executors load, at start.",
    )
    default_quotas: dict[QuotaResource, DefaultQuota] = Field(
        default_factory=dict,
        description="Quotas every project (personal ones too) starts with, by resource, e.g. "
        '{"cpu_hours": {"limit": 500, "period": "monthly"}, '
        '"concurrent_jobs": {"limit": 50, "period": "none"}}; '
        "an admin changes a project's own. Empty: none.",
    )
    fair_share_half_life_h: float = Field(
        168.0,
        ge=0,
        description="Dispatch: among users with as many jobs running, the job whose project used the "
        "fewest CPU-hours lately goes first, each hour of use weighing half as much after this many hours "
        "(Slurm's fair-share half-life); 0: projects' use does not count.",
    )
    quota_min_cut_s: float = Field(
        60.0,
        gt=0,
        description="In a project that cuts a job's time limit to what its quota has left, the shortest "
        "limit worth running; a job that would get less is refused.",
    )
    executor_routes: list[Route] = Field(
        default_factory=list,
        description="Rules sending jobs to an executor and queue/partition, first match wins, e.g. "
        '[{"gpus_min": 1, "executor": "slurm", "queue": "gpu"}]. An entrypoint\'s own executor wins.',
    )
    scheduler_interval_s: float = Field(1.0, gt=0, description="Longest pause between dispatch rounds.")
    sweep_max_jobs: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Most jobs one sweep may make (its grid's combinations or sets).",
    )
