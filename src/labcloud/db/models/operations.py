"""Operations: the maintenance switch (one row every replica reads) and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import UTCDateTime, new_id, utcnow


class MaintenanceState(Base):
    """Whether the installation is in maintenance: a single row (id 1); no row means off."""

    __tablename__ = "maintenance_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str] = mapped_column(Text, default="")
    retry_after_s: Mapped[int] = mapped_column(Integer, default=300)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(400), default="")


class AuditEvent(Base):
    """A security-relevant action: who (the account and its e-mail at the time, the API token used,
    or the system), what, on which target, from where. Written in the transaction of the change."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_target", "target_kind", "target_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)  # time-ordered
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))  # user | system | anonymous
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, index=True)
    actor_email: Mapped[str | None] = mapped_column(String(320), default=None)
    actor_label: Mapped[str] = mapped_column(String(200), default="")  # "token lc_ab12", "cli:root"
    token_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[str | None] = mapped_column(String(200), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(400), default=None)
