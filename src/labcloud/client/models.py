"""What the server answers, as typed objects (pydantic models).

The models read the API's JSON as it is and keep fields they do not know yet (``model_extra``), so a newer
server does not break an older client. Times are timezone-aware :class:`~datetime.datetime`; ids are
strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TERMINAL_STATES",
    "App",
    "AppVersion",
    "Entrypoint",
    "FileInfo",
    "InputSlot",
    "JobEvent",
    "JobInfo",
    "JoinCode",
    "OutputFile",
    "ProjectDetail",
    "ProjectInfo",
    "ProjectMember",
    "Quota",
    "QuotaRequest",
    "Resources",
    "StorageUsage",
    "StoredFile",
    "UsageRow",
    "User",
]

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Model(BaseModel):
    """The base of the client's models: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow")


class Resources(Model):
    """What one job may use: CPUs, memory, GPUs and a time limit."""

    cpus: float = Field(description="CPU cores.")
    memory_mb: int = Field(description="Memory in MiB; a job that uses more fails with out_of_memory.")
    gpus: int = Field(description="GPUs.")
    timeout_s: int = Field(description="Wall time in seconds; a job that runs longer fails with timeout.")


class InputSlot(Model):
    """A named input of an entrypoint: a file or a folder of your space, staged before the job runs."""

    type: str = Field(description="file or folder")
    required: bool
    description: str
    accept: list[str] = Field(default_factory=list, description="The file endings it takes; empty: any.")


class Entrypoint(Model):
    """One runnable command of an app version, with everything needed to submit a job of it."""

    available: bool = Field(description="False when this server cannot run it (see unavailable_reason).")
    unavailable_reason: str | None
    description: str
    runtime: str = Field(description="process or container")
    image: str | None = Field(description="The container image, for runtime container.")
    command: list[str]
    parameters: dict[str, Any] = Field(description="The JSON Schema params are checked against at submit.")
    inputs: dict[str, InputSlot]
    outputs: list[str] = Field(description="The files it is expected to write.")
    resources: Resources = Field(description="What a job gets unless the submission asks otherwise.")
    env: list[str] = Field(description="Environment variables a submission may set.")
    network: bool
    labels: dict[str, str] = Field(description="Worker labels a job needs (e.g. platform=spinnaker).")
    spec_hash: str

    def defaults(self) -> dict[str, Any]:
        """The default value of each top-level parameter that has one."""
        props = self.parameters.get("properties") or {}
        return {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}


class AppVersion(Model):
    """One published version of an app."""

    entrypoints: dict[str, Entrypoint]
    default_entrypoint: str | None = Field(description="The one a submission without entrypoint runs.")


class App(Model):
    """An app of the server's registry: its versions (newest first) and their entrypoints."""

    name: str
    title: str
    description: str
    latest_version: str
    version_order: list[str] = Field(description="The versions, newest first.")
    versions: dict[str, AppVersion]

    def entrypoint(self, name: str | None = None, version: str | None = None) -> Entrypoint:
        """An entrypoint (default: the one a submission without one runs) of a version (default: the
        latest); KeyError names what exists when there is no such version or entrypoint."""
        wanted = version or self.latest_version
        if wanted not in self.versions:
            raise KeyError(f"{self.name} has no version {wanted!r} (it has {', '.join(self.version_order)})")
        found = self.versions[wanted]
        chosen = name or found.default_entrypoint or next(iter(found.entrypoints))
        if chosen not in found.entrypoints:
            known = ", ".join(found.entrypoints)
            raise KeyError(f"{self.name} {wanted} has no entrypoint {chosen!r} (it has {known})")
        return found.entrypoints[chosen]

    def __repr__(self) -> str:
        return f"App(name={self.name!r}, title={self.title!r}, latest_version={self.latest_version!r})"


class User(Model):
    """An account."""

    id: str
    email: str
    name: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    storage_used_bytes: int = 0
    storage_limit_bytes: int | None = Field(None, description="None: the installation's default.")
    notify_email: str = Field("always", description="An e-mail when a job ends: always, failure or never.")
    must_change_password: bool = Field(False, description="Its password was issued by an administrator.")


class FileInfo(Model):
    """A file or folder of your space."""

    path: str
    type: str = Field(description="file or folder")
    size: int
    modified_at: datetime | None = None
    sha256: str | None = None
    job_id: str | None = Field(None, description="The job that wrote this file, for job outputs.")


class StoredFile(Model):
    """A file that was uploaded: where it is in your space, its size and SHA-256 (the same as the local
    file's; the upload checks), and the local file it came from."""

    path: str
    size: int
    sha256: str
    local: str | None = None


class StorageUsage(Model):
    """How much of your storage limit you use."""

    used_bytes: int
    limit_bytes: int | None = Field(description="None: no limit.")
    available_bytes: int | None


class ProjectInfo(Model):
    """A project: a lab group or grant whose members share jobs. ``role`` is yours in it: owner, manager,
    member (runs jobs there) or viewer (reads them); None for an admin who is no member. Every user also
    has a ``personal`` project, where jobs go unless a project is named."""

    id: str
    slug: str = Field(description="Its short name, as submit and the jobs listing take it.")
    name: str
    description: str
    personal: bool = Field(description="Your personal project: nobody else is in it.")
    role: str | None = Field(description="Your role: owner, manager, member or viewer.")
    join_code_expires_at: datetime | None = Field(
        description="Until when its current join code works (shown to managers; None: no code)."
    )
    over_quota: str = Field(
        "refuse",
        description="What a job that does not fit in a time quota gets: refuse (409) or cut (a shorter "
        "time limit).",
    )
    created_at: datetime

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slug={self.slug!r}, name={self.name!r}, role={self.role!r})"


class ProjectMember(Model):
    """Someone with a role in a project, and since when."""

    user_id: str
    email: str
    name: str
    role: str = Field(description="owner, manager, member or viewer")
    since: datetime


class ProjectDetail(ProjectInfo):
    """A project with its members (owners first)."""

    members: list[ProjectMember]


class JoinCode(Model):
    """A project's join code: whoever has it may join as a member until ``expires_at``. It is shown only
    when it is made; a new one replaces it."""

    code: str
    expires_at: datetime


class Quota(Model):
    """How much of one resource a project may use, and how much of it is gone.

    ``used`` is what ended jobs used this period, ``reserved`` what unfinished jobs may still take (their
    worst case: time limit x CPUs or GPUs); a new job must fit in ``left``. ``level`` is ok, warning (80%
    or more) or exceeded (all of it)."""

    resource: str = Field(description="cpu_hours, gpu_hours, concurrent_jobs or jobs_per_day")
    unit: str = Field(description="CPU-hours, GPU-hours or jobs")
    limit: float
    period: str = Field(description="monthly or daily (resets, UTC), allocation (between its dates) or none")
    starts_at: datetime | None = Field(description="An allocation's first moment.")
    ends_at: datetime | None = Field(description="An allocation's end (exclusive).")
    period_start: datetime | None = Field(description="Where the current period began.")
    used: float
    reserved: float
    left: float
    percent: float = Field(description="Of the limit used or held.")
    level: str = Field(description="ok, warning (from 80%) or exceeded (at 100%)")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resource={self.resource!r}, used={self.used:g}, reserved="
            f"{self.reserved:g}, limit={self.limit:g}, level={self.level!r})"
        )


class QuotaRequest(Model):
    """A member's request for more of a quota, and its decision (``state`` pending, approved or
    rejected; an approval adds ``amount`` to the limit)."""

    id: str
    resource: str
    amount: float = Field(description="How much more than the limit was then.")
    justification: str
    requested_by: str | None = Field(description="The user id of who asked (None: the account is gone).")
    state: str = Field(description="pending, approved or rejected")
    decided_by: str | None
    decided_at: datetime | None
    note: str = Field(description="What whoever decided said.")
    created_at: datetime


USAGE_GROUPS = ("project", "user", "app", "executor", "month")


class UsageRow(Model):
    """One row of a usage report: what the ended attempts of one user, app, executor or month (``by``)
    used; ``key`` is who or what that is (a user's email, an app's name, ``2026-03``)."""

    attempts: int
    cpu_hours: float = Field(description="Wall time x the CPUs asked for, as Slurm bills.")
    gpu_hours: float
    wall_hours: float
    peak_memory_mb: float = Field(description="The highest peak of one attempt.")

    @property
    def by(self) -> str:
        """What the report is grouped by: project, user, app, executor or month."""
        extra = self.model_extra or {}
        return next((name for name in USAGE_GROUPS if name in extra), "")

    @property
    def key(self) -> str:
        """The row's user (email), app, executor, project (slug) or month (``YYYY-MM``)."""
        return str((self.model_extra or {}).get(self.by, ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.by}={self.key!r}, cpu_hours={self.cpu_hours:g})"


class JobEvent(Model):
    """A change of a job's state, with when and why."""

    at: datetime
    from_state: str | None
    to_state: str
    reason: str | None
    message: str


class OutputFile(Model):
    """An output file of a job; ``path`` is relative to the job's folder ``jobs/{id}/`` of your space."""

    path: str
    size: int
    sha256: str | None = None


class InputFile(Model):
    """A file one of a job's inputs brought, as the job read it: ``sha256`` is the content it ran with,
    kept while the job exists; ``now`` says whether ``source`` still holds it (same, changed, gone)."""

    slot: str
    path: str
    source: str
    size: int
    sha256: str | None = None
    now: str
    url: str | None = None


class Attempt(Model):
    """One ended attempt of a job: where it ran, how it ended, what it used."""

    attempt: int
    ran_on: str = Field(
        description='"worker NAME", "Slurm job ID", "Celery task ID" or "this server (HOST)".'
    )
    state: str
    wall_s: float
    peak_memory_mb: float
    started_at: datetime | None
    finished_at: datetime


class JobInfo(Model):
    """A job: what it runs, where it is, and how it ended.

    ``state`` is one of queued, staging, running, finishing, succeeded, failed, cancelling, cancelled;
    a failed job's ``reason`` is app_error (with ``exit_code``), timeout, out_of_memory, staging_failed,
    worker_lost, system_error or rejected. ``message`` says what happened last (for a queued job, why it
    waits).
    """

    id: str
    name: str
    run_number: int = 0
    app: str
    version: str
    entrypoint: str
    state: str
    reason: str | None
    message: str
    exit_code: int | None
    progress: float | None = Field(description="0 to 1, when the app reports it.")
    attempts: int
    max_attempts: int
    params: dict[str, Any]
    inputs: dict[str, str] = Field(description="Slot → path in your space.")
    resources: Resources
    tags: dict[str, str]
    usage: dict[str, Any] = Field(description="Wall time, CPU seconds and peak memory, once it ran.")
    spec_hash: str
    project_id: str = ""
    project: str = Field("", description="The slug of the project it runs in.")
    owner_id: str = ""
    owner: str = Field("", description="The e-mail of who submitted it (a project's jobs are everyone's).")
    executor: str
    queue: str | None = None
    image: str | None = None
    worker: str | None = Field(None, description="A pull job: the worker that holds or ran it.")
    workers: list[str] = Field(default_factory=list, description="The only workers it may run on, if named.")
    group_id: str | None = Field(None, description="The session it was submitted in.")
    rerun_of: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outputs_deleted_at: datetime | None = Field(None, description="When retention deleted its outputs.")
    spec: dict[str, Any] | None = Field(
        None, description="The exact entrypoint spec it runs with (not in listings)."
    )
    attempt_history: list[Attempt] | None = Field(None, description="Each ended attempt (not in listings).")

    def assign(self, data: dict[str, Any]) -> None:
        """Take the fields of ``data``: the job as the server answered it just now."""
        fresh = type(self).model_validate(data)
        self.__dict__.update(fresh.__dict__)
        self.__pydantic_extra__ = fresh.__pydantic_extra__
        self.__pydantic_fields_set__ = set(fresh.__pydantic_fields_set__)

    @property
    def ended(self) -> bool:
        """It succeeded, failed or was cancelled: it will not change any more."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    def __repr__(self) -> str:
        where = f"{self.app}:{self.version}:{self.entrypoint}"
        state = f"{self.state} ({self.reason})" if self.reason else self.state
        return f"{type(self).__name__}(id={self.id!r}, app={where!r}, state={state!r})"
