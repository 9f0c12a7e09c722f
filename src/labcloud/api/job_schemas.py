"""Request and response bodies of the apps and jobs API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from labcloud.services.job_states import JobState


class ResourcesOut(BaseModel):
    """What one job may use (or an entrypoint's jobs get unless a submission asks otherwise)."""

    model_config = ConfigDict(from_attributes=True)

    cpus: float = Field(description="CPU cores.")
    memory_mb: int = Field(description="Memory in MiB; a job that uses more fails with out_of_memory.")
    gpus: int
    timeout_s: int = Field(description="Wall time in seconds; a job that runs longer fails with timeout.")


class JobSubmit(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "app": "spikes",
                    "params": {"threshold": 5},
                    "inputs": {"trace": "recordings/a.csv"},
                    "name": "a",
                }
            ]
        },
    )

    app: str = Field(max_length=64, description="App name from GET /api/v1/apps.")
    version: str | None = Field(None, max_length=64, description="Default: the latest version.")
    entrypoint: str | None = Field(
        None, max_length=64, description="Default: the version's only/default one."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Validated against the entrypoint's schema."
    )
    inputs: dict[str, str] = Field(default_factory=dict, description="Slot → path of a file in your space.")
    env: dict[str, str] = Field(default_factory=dict, description="Only names the entrypoint allows.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Overrides of cpus, memory_mb, gpus, timeout_s."
    )
    name: str = Field("", max_length=200)
    tags: dict[str, str] = Field(default_factory=dict)
    project: str | None = Field(
        None,
        max_length=40,
        description="The slug of a project you may run jobs in (GET /api/v1/projects); default: your "
        "personal project.",
    )
    notify: Literal["always", "failure", "never"] | None = Field(
        None, description="An e-mail when it ends: always, on failure only, never; default: your preference."
    )
    workers: list[Annotated[str, StringConstraints(max_length=100)]] = Field(
        default_factory=list,
        max_length=100,
        description="Run only on one of these workers (by name: an instrument, a chosen machine); its labels "
        "and resources must fit too. It waits for them, however long.",
    )


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    run_number: int = Field(description="Its owner's n-th job: #12 tells an unnamed job apart.")
    app: str
    version: str
    entrypoint: str
    state: JobState
    reason: str | None = Field(description="Why it failed: app_error, timeout, out_of_memory, ...")
    message: str = Field(description="What happened last, in words; for a queued job, why it waits.")
    exit_code: int | None
    progress: float | None
    attempts: int
    max_attempts: int
    params: dict[str, Any]
    inputs: dict[str, str]
    resources: ResourcesOut
    tags: dict[str, str]
    usage: dict[str, Any]
    spec_hash: str
    project_id: uuid.UUID
    project: str = Field("", description="The slug of the project the job runs in.")
    owner_id: uuid.UUID
    owner: str = Field("", description="The e-mail of who submitted it.")
    executor: str
    queue: str | None = Field(None, description="The Slurm partition or Celery queue it went to.")
    image: str | None = Field(None, description="A container job: the content id of the image it ran.")
    worker: str | None = Field(None, description="A pull job: the name of the worker that holds or ran it.")
    workers: list[str] = Field(default_factory=list, description="The only workers it may run on, if named.")
    group_id: uuid.UUID | None = Field(None, description="The session (or sweep) it was submitted in.")
    rerun_of: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outputs_deleted_at: datetime | None = Field(
        None, description="When retention deleted its outputs (the job, its history and log stay)."
    )


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    ran_on: str = Field(description='Where: "worker NAME", "Slurm job ID", "Celery task ID" or this server.')
    state: str = Field(description="How the attempt ended.")
    wall_s: float
    peak_memory_mb: float
    started_at: datetime | None
    finished_at: datetime


class JobDetail(JobOut):
    spec: dict[str, Any] = Field(description="The exact entrypoint spec this job runs with.")
    attempt_history: list[AttemptOut] = Field(
        default_factory=list, description="Each ended attempt: where it ran, how it ended, what it used."
    )


class JobEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    from_state: str | None
    to_state: str
    reason: str | None
    message: str


class InputFileOut(BaseModel):
    slot: str = Field(description="The input it belongs to.")
    path: str = Field(
        description="Its path in the job's folder: the file's name, or folder/... for a folder."
    )
    source: str = Field(description="Where it was in its space when the job was submitted.")
    size: int
    sha256: str | None = None
    now: Literal["same", "changed", "gone"] = Field(
        description="Whether that path still holds this content (same), holds other content (changed), or "
        "holds nothing (gone). The job keeps its content either way."
    )
    url: str | None = Field(
        None, description="Where to download the content the job used; None if you may not."
    )


class OutputFile(BaseModel):
    path: str
    size: int
    sha256: str | None = None
