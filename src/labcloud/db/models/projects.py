"""Projects, their members, quotas, quota requests and the usage records accounting reads."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import EnumText, UTCDateTime, new_id, utcnow


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
