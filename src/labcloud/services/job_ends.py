"""The ends of a user's jobs for their open pages: read from the outbox (:class:`~labcloud.db.models.Event`,
written in each job's end transaction by :func:`labcloud.services.webhooks.emit_job_end`), so a page hears
of every end exactly as webhooks do, and nothing is stored for it. Ids are time-ordered, so "newer than the
last one seen" is ``id > after`` on the ``(user_id, id)`` index."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import Event, User
from labcloud.services.webhooks import JOB_EVENTS

BATCH = 50  # events a call


def since(session: Session, user: User, after: uuid.UUID, limit: int = BATCH) -> list[Event]:
    """The user's own job-end events newer than ``after``, oldest first. A page that opens starts from
    :func:`last_id`, so an old backlog is never replayed."""
    stmt = (
        select(Event)
        .where(Event.user_id == user.id, Event.id > after, Event.kind.in_(JOB_EVENTS))
        .order_by(Event.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def last_id(session: Session, user: User) -> uuid.UUID | None:
    """The id of the user's newest job-end event: where a page that just opened starts from."""
    stmt = (
        select(Event.id)
        .where(Event.user_id == user.id, Event.kind.in_(JOB_EVENTS))
        .order_by(Event.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()
