"""The outbox of events and the webhook subscriptions and deliveries it feeds."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import UTCDateTime, new_id, utcnow


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
