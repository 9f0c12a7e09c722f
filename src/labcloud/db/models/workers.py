"""Remote workers that pull jobs, the schemas their status must match (per label), and their history."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import EnumText, UTCDateTime, new_id, utcnow


class WorkerState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    REVOKED = "revoked"


class Worker(Base):
    """A machine that pulls jobs over HTTPS. Only a SHA-256 of its token is kept."""

    __tablename__ = "workers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Where it is and what it is, in words (an instrument's room, its rig): set at registration.
    location: Mapped[str] = mapped_column(String(200), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    state: Mapped[WorkerState] = mapped_column(EnumText(WorkerState, 16), default=WorkerState.ACTIVE)
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    telemetry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[str] = mapped_column(String(64), default="")
    # Its container engines as its last heartbeat said ([{"kind", "images"}]), or why it has none.
    engines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    engine_problem: Mapped[str] = mapped_column(Text, default="")
    # What was wrong with the status (telemetry["status"]) of its last heartbeat: [{"field", "message",
    # "schema"}], against the device schemas of its labels; empty when it was valid or there was none.
    status_problems: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # When its last history sample (DeviceSample) was taken: heartbeats sample at most once an interval.
    sampled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class DeviceSchema(Base):
    """The JSON Schema that the status of every worker with the label ``key=value`` must match (an
    admin's)."""

    __tablename__ = "device_schemas"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class DeviceSample(Base):
    """A worker's numbers at one moment (load, free disk and memory, each numeric field of its status), for
    the charts of its last day; pruned by housekeeping."""

    __tablename__ = "device_samples"
    __table_args__ = (Index("ix_device_samples_worker_id_at", "worker_id", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    worker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    data: Mapped[dict[str, float]] = mapped_column(JSON)
