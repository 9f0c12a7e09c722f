"""The bodies of the worker protocol (docs/worker-protocol.md): what workers and runners send, and what
they are answered (:mod:`labcloud.api.routers.worker_api`, :mod:`labcloud.api.routers.worker_jobs`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from labcloud.api.job_schemas import ResourcesOut
from labcloud.execution.engine_options import MAX_ENGINES, MAX_IMAGES, MAX_PROBLEM, MAX_REFERENCE
from labcloud.protocol import FINISH_LOG, FINISH_LOG_MAX
from labcloud.services.job_logs import MAX_OFFSET

MAX_WAIT_S = 30.0  # the longest a claim waits for a job
MAX_CLAIM_JOBS = 16  # the most jobs one claim takes


class Resources(BaseModel):
    cpus: float = Field(0, ge=0)
    memory_mb: float = Field(0, ge=0)
    gpus: float = Field(0, ge=0)


class HeldJob(BaseModel):
    id: uuid.UUID
    attempt: int


ImageReference = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REFERENCE, pattern=r"^\S+$")]
ImageId = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]


class EngineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["docker", "podman", "apptainer"]
    images: list[ImageReference] = Field(
        default_factory=list, max_length=MAX_IMAGES, description="its local images (repository:tag)"
    )
    image_ids: dict[ImageReference, ImageId] = Field(
        default_factory=dict,
        max_length=2 * MAX_IMAGES,
        description="each local image's content id, by reference (repository:tag, and repository@sha256:..."
        " where the engine knows the registry digest)",
    )


class HeartbeatIn(BaseModel):
    capacity: Resources = Field(default_factory=Resources)
    free: Resources = Field(default_factory=Resources)
    labels: dict[str, str] = Field(default_factory=dict)
    telemetry: dict[str, Any] = Field(default_factory=dict)
    jobs: list[HeldJob] = Field(default_factory=list, max_length=10_000)
    version: str = Field("", max_length=64)
    engines: list[EngineIn] = Field(
        default_factory=list,
        max_length=MAX_ENGINES,
        description="the container engines that run its container jobs",
    )
    engine_problem: str = Field("", max_length=MAX_PROBLEM, description="why it has no engine")


class AttemptsIn(BaseModel):
    attempts: list[HeldJob] = Field(max_length=1000, description="attempts whose containers an engine holds")


class AttemptsOut(BaseModel):
    active: list[HeldJob] = Field(description="those that are their job's current attempt, still running")


class StatusProblem(BaseModel):
    field: str = Field(description="the field at fault, from the status down: status.temperature_c")
    message: str
    schema_: str = Field(
        "",
        alias="schema",
        serialization_alias="schema",
        description="the label whose schema it breaks (key=value); empty for a problem of form or size",
    )

    model_config = ConfigDict(populate_by_name=True)


class HeartbeatOut(BaseModel):
    state: str
    lease_seconds: int
    heartbeat_interval_s: float
    cancel: list[uuid.UUID]
    abort: list[uuid.UUID]
    status_problems: list[StatusProblem] = Field(
        default_factory=list,
        description="what is wrong with the status this heartbeat carried (telemetry.status): empty when it "
        "is valid, or there is none and none is asked for",
    )


class ClaimIn(BaseModel):
    free: Resources
    labels: dict[str, str] = Field(default_factory=dict)
    wait_s: float = Field(20.0, ge=0, le=MAX_WAIT_S)
    start: bool = Field(
        False,
        description="start at once a job with nothing to stage (no inputs, not a task, no container): "
        "its assignment's state is then 'running', and no start call follows",
    )
    max_jobs: int = Field(
        1,
        ge=1,
        le=MAX_CLAIM_JOBS,
        description="take up to this many jobs that fit in 'free' together, in one claim: the first in "
        "'job', the others in 'more'",
    )


class StepEnd(BaseModel):
    """How one executor of a task went; its log stretch in bytes from the start of this attempt's log."""

    model_config = ConfigDict(extra="ignore")

    exit_code: int | None = None
    started_at: float | None = Field(None, ge=0)
    finished_at: float | None = Field(None, ge=0)
    log_start: int | None = Field(None, ge=0)
    log_end: int | None = Field(None, ge=0)


class FinishLog(BaseModel):
    """The end of the attempt's log, sent with the finish instead of in a call of its own."""

    model_config = ConfigDict(extra="forbid")

    offset: int = Field(ge=0, le=MAX_OFFSET, description="where the bytes start in this attempt's log")
    data: str = Field(
        max_length=(FINISH_LOG_MAX + 2) // 3 * 4,
        description=f"the bytes, base64 (at most {FINISH_LOG_MAX} once decoded)",
    )


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal[
        "exited",
        "timeout",
        "out_of_memory",
        "start_failed",
        "cancelled",
        "staging_failed",
        "image_unavailable",
        "lost",
    ]
    exit_code: int | None = None
    message: str = Field("", max_length=4000)
    usage: dict[str, float] = Field(default_factory=dict)
    problem: str | None = Field(
        None, max_length=4000, description="the run ended but its outputs could not all be kept"
    )
    note: str | None = Field(
        None, max_length=4000, description="outputs not kept on purpose (links, fifos...), for the message"
    )
    image: str | None = Field(
        None,
        max_length=300,
        pattern=r"^sha256:[0-9a-f]{64}$|^\S+$",
        description="the container image's content id",
    )
    steps: list[StepEnd] | None = Field(
        None, max_length=100, description="a task's executors: each one's exit code, times and log stretch"
    )
    log: FinishLog | None = Field(
        None,
        description=f"the log's last bytes, written before the end is recorded (servers whose assignments "
        f"name the feature '{FINISH_LOG}')",
    )


class ProgressIn(BaseModel):
    fraction: float = Field(ge=0, le=1)


class AssignedFile(BaseModel):
    path: str = Field(description="Its path below the input (the input's own name for a file).")
    size: int | None = Field(description="Its size (unknown for a task's downloads).")
    sha256: str | None
    url: str = Field(description="Where its bytes are: a presigned URL, or this API's (with the job token).")


class AssignedInput(BaseModel):
    name: str
    files: list[AssignedFile]


class AssignedStep(BaseModel):
    image: str
    command: list[str]
    workdir: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    ignore_error: bool = False


class AssignedTaskInput(BaseModel):
    path: str = Field(description="Where it appears in the containers.")
    directory: bool
    name: str
    files: list[AssignedFile]


class AssignedTaskOutput(BaseModel):
    path: str = Field(description="A path in the containers (a file, a folder or a pattern).")
    directory: bool
    path_prefix: str = ""


class AssignedTask(BaseModel):
    """A task's layout: its executors run one after the other, each in a container; what it reads and
    leaves lies at these paths in every container."""

    steps: list[AssignedStep]
    inputs: list[AssignedTaskInput]
    outputs: list[AssignedTaskOutput]
    volumes: list[str]
    user: str
    network: str


class Assignment(BaseModel):
    """A job to run, and the job token to report on it with."""

    id: uuid.UUID
    attempt: int
    token: str = Field(description="The job token (lcj_...): it holds this attempt of this job only.")
    token_expires_at: datetime
    lease_expires_at: datetime | None
    app: str
    version: str
    entrypoint: str
    spec: dict[str, Any] = Field(description="The entrypoint spec to run.")
    params: dict[str, Any]
    env: dict[str, str]
    resources: ResourcesOut
    inputs: dict[str, AssignedInput]
    image: str | None = Field(description="A rerun's container image, by content id: it runs the same.")
    task: AssignedTask | None = Field(None, description="A GA4GH TES task: its executors, files and outputs.")
    state: str = Field(
        "staging",
        description="'running' when the claim started the job (it asked to start one with nothing to stage): "
        "no start call follows",
    )
    features: list[str] = Field(
        default_factory=list,
        description=f"What this server takes beyond the first protocol: '{FINISH_LOG}', a finish carrying "
        "the log's last bytes",
    )


class ClaimOut(BaseModel):
    job: Assignment
    more: list[Assignment] = Field(
        default_factory=list, description="the other jobs taken when the claim asked for several (max_jobs)"
    )


class LeaseOut(BaseModel):
    cancel: bool = Field(description="Stop the job: it is being cancelled.")
    lease_seconds: int
    heartbeat_interval_s: float


class StateOut(BaseModel):
    state: str


class LogSizeOut(BaseModel):
    size: int = Field(description="The bytes of this attempt's log the server holds.")


class CancelOut(BaseModel):
    cancel: bool = Field(description="Stop the job: it is being cancelled.")


class StoredOutput(BaseModel):
    path: str
    size: int
    sha256: str | None
