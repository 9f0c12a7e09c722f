"""ORM models. The schema itself is owned by the Alembic migrations next to this module."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from labcloud.db.types import EnumText, ResourcesJSON, UTCDateTime, new_id, utcnow
from labcloud.registry.models import Resources
from labcloud.services.executor_refs import ExecutorRef, ExecutorRefText
from labcloud.services.job_states import FailureReason, JobState


class WorkerState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REVOKED = "revoked"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password change and deactivation: login tokens issued before stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Storage: a per-user limit (None: the installation's default) for the user's personal project, and
    # the bytes its files hold (kept equal to the personal project's ``storage_used_bytes``, which counts).
    storage_limit_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # When a job of theirs ends, an e-mail: "always", "failure" (failed only) or "never" (a job may say
    # otherwise when it is submitted).
    notify_email: Mapped[str] = mapped_column(String(16), default="always")
    # The same news by chat, through Apprise (an apprise URL, e.g. slack://... or json://...): a secret,
    # never shown back but for its scheme; "" for none.
    notify_apprise_url: Mapped[str] = mapped_column(Text, default="", server_default="")
    jobs_submitted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the last run number
    # Its password was issued by an administrator: the web asks for one of its own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @property
    def notify_apprise(self) -> str | None:
        """The scheme of the chat channel (what may be shown of it), or None."""
        return self.notify_apprise_url.split("://", 1)[0] if self.notify_apprise_url else None

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ProjectRole(StrEnum):
    """What a member of a project may do, each role all that the ones below it may."""

    VIEWER = "viewer"  # reads the project's jobs
    MEMBER = "member"  # runs jobs in the project
    MANAGER = "manager"  # adds and removes members, hands out join codes, cancels anyone's job
    OWNER = "owner"  # everything, managers and owners included


class Project(Base):
    """A group that shares jobs and answers for what they use: a lab's group or grant. Every user also has
    a personal one (``personal_user_id``), with nobody else in it."""

    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    personal_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True, default=None
    )
    # A code with which a signed-in user joins as a member: only its SHA-256 is kept, until it expires.
    join_code_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    join_code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # A job whose worst case does not fit in a time quota: refused ("refuse"), or admitted with its time
    # limit cut to what is left ("cut"; it ends as quota_exceeded when it reaches that).
    over_quota: Mapped[str] = mapped_column(String(16), default="refuse")
    # Storage: the bytes the project's files hold, and a limit an admin set (None: for a personal project
    # its user's limit, for a shared one the installation's ``project_storage_bytes``).
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    storage_limit_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Quota(Base):
    """How much of one resource a project may use: within a period that resets (monthly, daily), within an
    allocation's dates, or at any time (none). ``used`` counts what ended, ``reserved`` what the project's
    unfinished jobs may still take; both change only by conditional updates."""

    __tablename__ = "project_quotas"
    __table_args__ = (Index("ix_project_quotas_project_id_resource", "project_id", "resource", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(String(32))
    limit: Mapped[float] = mapped_column(Float)
    period: Mapped[str] = mapped_column(String(16), default="monthly")
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    used: Mapped[float] = mapped_column(Float, default=0.0)
    reserved: Mapped[float] = mapped_column(Float, default=0.0)
    # The level of use its project was last told of by a quota.warning event: 0, 80 or 100 (percent).
    warned_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class QuotaRequest(Base):
    """A member's request for more of a resource, with why; the project's managers or an admin decide.
    Kept with its decision: the history of a project's budget."""

    __tablename__ = "quota_requests"
    __table_args__ = (Index("ix_quota_requests_project_id_created_at", "project_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(String(32))
    amount: Mapped[float] = mapped_column(Float)  # more than the limit is now
    justification: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, approved, rejected
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageRecord(Base):
    """What one finished attempt of a job used, written once when it ends and never changed: the ground
    of accounting. It names its job, project and user without holding on to them (no foreign keys), so it
    stays when they go."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_project_id_finished_at", "project_id", "finished_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    app: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    executor: Mapped[str] = mapped_column(String(32))
    # Where it ran, in words: "worker rig-1", "Slurm job 123", "Celery task ...", "this server (host)".
    ran_on: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16))  # how the attempt ended: succeeded, failed, cancelled
    cpus: Mapped[float] = mapped_column(Float)
    gpus: Mapped[float] = mapped_column(Float)
    wall_s: Mapped[float] = mapped_column(Float)
    cpu_hours: Mapped[float] = mapped_column(Float)  # wall time x CPUs asked for (as Slurm bills)
    gpu_hours: Mapped[float] = mapped_column(Float)
    peak_memory_mb: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[ProjectRole] = mapped_column(EnumText(ProjectRole, 16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A personal API token. Only a SHA-256 of the secret is kept: the secret is random, so no slow hash."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    user: Mapped[User] = relationship(back_populates="tokens")


class Job(Base):
    """One run of an app entrypoint. The stored spec and its hash say exactly what ran."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_id_id", "owner_id", "id"),
        Index("ix_jobs_state_owner_id_id", "state", "owner_id", "id"),
        Index("ix_jobs_state_executor_id", "state", "executor", "id"),  # claims by remote workers
        Index("ix_jobs_project_id_id", "project_id", "id"),  # a project's jobs, newest first
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


class FileEntry(Base):
    """One file or folder of a project's space (a user's own files are in their personal project's).
    Files point at an immutable object of the store by key; ``owner_id`` is who wrote it.

    ``parent`` is the folder's path ("" at the top), so listing a folder is one index range.
    """

    __tablename__ = "files"
    __table_args__ = (
        Index("uq_files_project_id_path", "project_id", "path", unique=True),
        Index("ix_files_project_id_parent_name", "project_id", "parent", "name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    parent: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(8))  # "file" | "folder"
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    blob_key: Mapped[str | None] = mapped_column(String(200), default=None)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)  # output of this job
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A resumable (tus) upload in progress. Its bytes collect in a file under the uploads folder."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The project whose space the file goes into.
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    meta: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DirectUpload(Base):
    """An upload that goes straight to the S3 store through presigned part URLs."""

    __tablename__ = "direct_uploads"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The project whose space the file goes into.
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    part_size: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(200))
    store_upload_id: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Worker(Base):
    """A machine that pulls jobs over HTTPS. Only a SHA-256 of its token is kept."""

    __tablename__ = "workers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    state: Mapped[WorkerState] = mapped_column(EnumText(WorkerState, 16), default=WorkerState.ACTIVE)
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    telemetry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[str] = mapped_column(String(64), default="")
    # Its container engines as its last heartbeat said ([{"kind", "images"}]), or why it has none.
    engines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    engine_problem: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class BrowserSession(Base):
    """A browser logged in. Its cookie carries a random secret of which only a SHA-256 is kept; deleting
    the row (logout, password change, deactivation) ends the session wherever that cookie is."""

    __tablename__ = "browser_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The user's token_version at login: a later password change or deactivation ends the session.
    token_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # moved on while in use


class LoginAttempt(Base):
    """Recent login attempts under one key (an account at an address, or an address), counted in the
    database so that every server replica throttles from the same counts. The key is a SHA-256, so no
    email address typed into the form is kept."""

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # every change bumps it: compare-and-set


class Event(Base):
    """Something others may want to hear of (a job ended, ...), written in the same transaction as what
    it tells: the outbox. The sender fans each one out to the subscriptions that want it and marks it;
    its id is the delivery's ``webhook-id``, by which receivers can drop a repeat."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_fanned_out_id", "fanned_out", "id"),
        Index("ix_events_mailed_user_id", "mailed", "user_id"),
        Index("ix_events_user_id_id", "user_id", "id"),  # a page's poll for its user's new events
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40))  # job.succeeded, job.failed, job.cancelled, webhook.test
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    # Only for this subscription (a test): nobody else's.
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    fanned_out: Mapped[bool] = mapped_column(Boolean, default=False)
    mailed: Mapped[bool] = mapped_column(Boolean, default=False)  # its e-mail sent (or none was due)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookSubscription(Base):
    """A URL that hears of some events: a user's own jobs, or (set by its managers) a project's."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), default=None, index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))  # whsec_...: signs each delivery; shown once
    state: Mapped[str] = mapped_column(String(16), default="active")  # active, paused
    paused_reason: Mapped[str] = mapped_column(Text, default="")
    failures_in_a_row: Mapped[int] = mapped_column(Integer, default=0)  # events given up on, in a row
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription, and how its tries went (each try's answer is kept in ``tries``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_try_at", "state", "next_try_at"),
        Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    tries: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
