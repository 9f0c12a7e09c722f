"""Remote workers that pull jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, String, Text, Uuid
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
