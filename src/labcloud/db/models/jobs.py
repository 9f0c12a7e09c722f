"""Jobs, their tags and history, and the TES task a job may be."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, defer, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import EnumText, ResourcesJSON, UTCDateTime, new_id, utcnow
from labcloud.registry.spec_parts import Resources
from labcloud.services.executor_refs import ExecutorRef, ExecutorRefText
from labcloud.services.job_states import FailureReason, JobState

# The jobs pull workers may claim: a partial index holds only these, in claim order (services.claims puts the
# same literal condition in its query, so a prepared statement can use the index too).
QUEUED_PULL = "state = 'queued' AND executor = 'pull'"
_QUEUED_PULL = text(QUEUED_PULL)
# The jobs a dispatcher may start: queued, not yet in an engine's own queue. Its partial index leads with
# the executor and the owner, so that who waits is found by skipping from one owner to the next (one index
# seek each, however many jobs they queued), and each owner's oldest job by one more.
WAITING_HERE = "state = 'queued' AND worker_id IS NULL"
WAITING_CLAUSE = text(f"jobs.{WAITING_HERE.replace(' AND ', ' AND jobs.')}")
_WAITING_HERE = text(WAITING_HERE)


class Job(Base):
    """One run of an app entrypoint. The stored spec and its hash say exactly what ran."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_state_owner_id_id", "state", "owner_id", "id"),
        Index("ix_jobs_state_executor_id", "state", "executor", "id"),  # claims by remote workers
        Index("ix_jobs_project_id_id", "project_id", "id"),  # a project's jobs, newest first
        Index("ix_jobs_queued_pull", "id", sqlite_where=_QUEUED_PULL, postgresql_where=_QUEUED_PULL),
        Index(
            "ix_jobs_waiting_executor_owner_id_id",
            "executor",
            "owner_id",
            "id",
            sqlite_where=_WAITING_HERE,
            postgresql_where=_WAITING_HERE,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The project it runs in and answers to (its owner's personal project unless another was chosen).
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # What its project's quotas hold for it until it ends: {resource: amount}, and "cut_timeout_s" when its
    # time limit was cut to what a quota had left.
    quota_hold: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    # This job's e-mail when it ends, over its owner's preference: always, failure, never (None: theirs).
    notify: Mapped[str | None] = mapped_column(String(16), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    # Its owner's n-th job (1, 2, 3...): how an unnamed job is told apart ("spikes #12").
    run_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    app: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    entrypoint: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    inputs: Mapped[dict[str, str]] = mapped_column(JSON)
    env: Mapped[dict[str, str]] = mapped_column(JSON)
    resources: Mapped[Resources] = mapped_column(ResourcesJSON)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[JobState] = mapped_column(EnumText(JobState, 16), default=JobState.QUEUED)
    reason: Mapped[FailureReason | None] = mapped_column(EnumText(FailureReason, 32), default=None)
    message: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    progress: Mapped[float | None] = mapped_column(Float, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    executor: Mapped[str] = mapped_column(String(32), default="local")
    executor_ref: Mapped[ExecutorRef | None] = mapped_column(ExecutorRefText, default=None)
    queue: Mapped[str | None] = mapped_column(String(100), default=None)  # Slurm partition, Celery queue
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A container job: the content id (sha256:...) of the image it ran, once known; a rerun runs the same.
    image: Mapped[str | None] = mapped_column(String(300), default=None)
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    # Runs only on the workers named in job_targets (an instrument, a chosen set of them).
    targeted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The group it was submitted in: a session across devices, a sweep over parameters.
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("job_groups.id", ondelete="SET NULL"), default=None, index=True
    )
    # A job run in steps (a GA4GH TES task): each step's exit code, times and stretch of the log, in order.
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    # Pull executor: the worker holding the job and until when; ``attempts`` fences older holders.
    worker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    previous_worker_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When retention deleted its outputs (the job itself stays, with its history and log).
    outputs_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


def without_definition() -> tuple[Any, ...]:
    """Loader options for a job read to move its state (dispatching it, recording its run): its largest
    JSON, what it runs and with what, is left unread (and read if anything asks for it after all)."""
    return _WITHOUT_DEFINITION


_WITHOUT_DEFINITION = (defer(Job.spec), defer(Job.params), defer(Job.inputs), defer(Job.env), defer(Job.tags))


class RetentionRun(Base):
    """One run of retention that deleted (not a dry run): when, and what it removed (counts by kind)."""

    __tablename__ = "retention_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TesTask(Base):
    """A job submitted as a GA4GH TES task: the task as the API shows it, and what only the task has."""

    __tablename__ = "tes_tasks"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # The task as created (inputs without their content), normalised: what every view is cut from.
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Inline inputs' content by the input's index: secret (a workflow engine's job script may hold
    # credentials), never logged nor shown; gone with the task.
    contents: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # The files its outputs delivered: url, path (in the container), size_bytes.
    outputs_log: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # What the server said of it beside its state (parameters it ignored, ...).
    system_logs: Mapped[list[str]] = mapped_column(JSON, default=list)


class JobInput(Base):
    """One file a job's input brought, as it was when the job was submitted: the stored object it read (kept
    while the job exists, whatever later happens to the file at that path) and its checksum."""

    __tablename__ = "job_inputs"
    __table_args__ = (Index("uq_job_inputs_job_id_slot_rel", "job_id", "slot", "rel", unique=True),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(64))
    # Where it lands in the job's folder: the file's name, or the folder input's name / path inside it.
    rel: Mapped[str] = mapped_column(String(1024))
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the space it was read from
    path: Mapped[str] = mapped_column(String(1024))  # its path in that space then
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    blob_key: Mapped[str] = mapped_column(String(200), index=True)

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


class JobTarget(Base):
    """A worker a targeted job may run on (and no other)."""

    __tablename__ = "job_targets"
    __table_args__ = (Index("ix_job_targets_worker_id_job_id", "worker_id", "job_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    worker_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workers.id", ondelete="CASCADE"), primary_key=True
    )


class JobGroup(Base):
    """Jobs submitted together: a session (one job on each of a chosen set of devices, with per-device
    parameters beside shared ones) or a sweep (one job per combination of parameter values)."""

    __tablename__ = "job_groups"
    __table_args__ = (Index("ix_job_groups_owner_id_id", "owner_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # "session" | "sweep"
    name: Mapped[str] = mapped_column(String(200), default="")
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    app: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    entrypoint: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # shared by every job
    # What was said of each member when it was submitted, by job id (a device busy in another session).
    notes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobTag(Base):
    """Tags as rows, so that listing jobs by tag is an index lookup on every database."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_key_value_job_id", "key", "value", "job_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class JobEvent(Base):
    """One state change of a job: its history."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[JobState | None] = mapped_column(EnumText(JobState, 16))
    to_state: Mapped[JobState] = mapped_column(EnumText(JobState, 16))
    reason: Mapped[FailureReason | None] = mapped_column(EnumText(FailureReason, 32), default=None)
    message: Mapped[str] = mapped_column(Text, default="")
