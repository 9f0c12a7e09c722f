"""Webhooks: URLs that hear of events, signed as the Standard Webhooks spec says, delivered at least once.

An event is written to the outbox (:class:`~labcloud.db.models.Event`) in the same transaction as what it
tells (:func:`emit_job_end`, called by the job lifecycle), so nothing is told that did not happen and
nothing that happened is lost: a server killed after the commit sends it after its restart. This module is
the outbox and the subscriptions (who hears of what, their deliveries, a test, a redelivery); sending them
is :mod:`labcloud.services.webhook_sender`.

Targets on loopback, link-local and private addresses are refused (when subscribing, and again on the
address each try connects to) unless ``webhook_allow_private``; redirects are not followed.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Text, bindparam, cast, func, or_, select
from sqlalchemy.orm import Session

from labcloud.db.models import Event, Job, Project, User, WebhookDelivery, WebhookSubscription
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput, NotFound
from labcloud.services import file_store, projects, quotas, url_fetch
from labcloud.services.projects import Action
from labcloud.settings import Settings
from labcloud.telemetry.metrics import after_commit

JOB_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")


STATE_CHANGED = "job.state_changed"


EVENTS = (*JOB_EVENTS, STATE_CHANGED, quotas.WARNING_EVENT, file_store.UPLOADED_EVENT)


TEST_EVENT = "webhook.test"


# Told to the subscription's owner by mail, never to webhooks (written already fanned out).
PAUSED_EVENT = "webhook.paused"


MAX_SUBSCRIPTIONS = 20  # per user


# --- the outbox ---------------------------------------------------------------------------------------------


def title(job: Job) -> str:
    """How a job is named to people: its name, else its app and run number ("spikes #12")."""
    return job.name or f"{job.app} #{job.run_number}"


def job_identity(job: Job) -> dict[str, Any]:
    """Which job an event is about, as every job event tells it."""
    return {
        "id": str(job.id),
        "name": job.name,
        "run_number": job.run_number,
        "title": title(job),
        "app": job.app,
        "version": job.version,
    }


def emit_job_end(session: Session, job: Job) -> None:
    """A job ended: its event, in the caller's transaction."""
    kind = f"job.{job.state}"
    if kind not in JOB_EVENTS:
        return
    session.add(
        Event(
            kind=kind,
            user_id=job.owner_id,
            project_id=job.project_id,
            payload={
                "job": {
                    **job_identity(job),
                    "state": str(job.state),
                    "reason": str(job.reason) if job.reason else None,
                    "message": job.message,
                    "exit_code": job.exit_code,
                    "attempts": job.attempts,
                    "started_at": job.started_at.isoformat() if job.started_at else None,
                    "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                    "usage": dict(job.usage or {}),
                }
            },
            fanned_out=False,
        )
    )


# Whether anyone hears of an owner's and project's state changes, as last asked, and until when that answer
# holds: asked at every change of every job's state, it is remembered for a moment, and forgotten when this
# process makes or changes a subscription (another replica's new subscription is heard of within that
# moment).
WANTED_TTL_S = 2.0
_state_changes_wanted: dict[tuple[uuid.UUID, uuid.UUID | None], tuple[bool, float]] = {}


def _forget_wanted(session: Session) -> None:
    """Subscriptions change in this transaction: what was remembered of them is forgotten now and again
    once it commits (a job moving meanwhile may have asked before it did)."""
    _state_changes_wanted.clear()
    after_commit(session, _state_changes_wanted.clear)


# Built once (asked at every change of every job's state): an active subscription of the owner's own, or of
# the project's, that asks for state changes.
_WANTS_STATE_CHANGES = (
    select(WebhookSubscription.id)
    .where(
        or_(
            (WebhookSubscription.owner_id == bindparam("owner")) & WebhookSubscription.project_id.is_(None),
            WebhookSubscription.project_id == bindparam("project"),
        ),
        WebhookSubscription.state == "active",
        cast(WebhookSubscription.events, Text).contains(f'"{STATE_CHANGED}"'),
    )
    .limit(1)
)


def emit_state_change(
    session: Session, job: Job, from_state: str, to_state: str, reason: str | None, message: str
) -> None:
    """A job changed state: its event, in the caller's transaction, but only when some active subscription
    of the job's owner or project asks for it (one query on the indexed owner and project), so that the
    job path pays for no row nobody will read."""
    key = (job.owner_id, job.project_id)
    known = _state_changes_wanted.get(key)
    if known is None or known[1] < time.monotonic():
        found = session.scalar(_WANTS_STATE_CHANGES, {"owner": job.owner_id, "project": job.project_id})
        known = _state_changes_wanted[key] = (found is not None, time.monotonic() + WANTED_TTL_S)
    if not known[0]:
        return
    session.add(
        Event(
            kind=STATE_CHANGED,
            user_id=job.owner_id,
            project_id=job.project_id,
            payload={
                "job": job_identity(job),
                "from": str(from_state),
                "to": str(to_state),
                "reason": str(reason) if reason else None,
                "message": message,
            },
            fanned_out=False,
        )
    )


# --- subscriptions ------------------------------------------------------------------------------------------


def subscribe(
    session: Session, settings: Settings, user: User, url: str, events: list[str], project_slug: str | None
) -> WebhookSubscription:
    """A new subscription of ``user`` (to their own jobs' events, or, as one of its managers, to a
    project's); every bad field at once. Its secret is shown once, by the caller."""
    errors = []
    try:
        host = url_fetch.check_url(url)
        url_fetch._addresses(host, 443, settings.webhook_allow_private)
    except url_fetch.FetchError as exc:
        errors.append({"loc": ["body", "url"], "msg": str(exc)})
    wrong = [e for e in events if e not in EVENTS]
    if not events or wrong:
        errors.append({"loc": ["body", "events"], "msg": f"one or more of {', '.join(EVENTS)}"})
    project: Project | None = None
    if project_slug:
        try:
            project = projects.by_slug(session, user, project_slug, Action.MANAGE)
        except Exception as exc:
            errors.append({"loc": ["body", "project"], "msg": getattr(exc, "detail", str(exc))})
    count = len(
        list(session.scalars(select(WebhookSubscription.id).where(WebhookSubscription.owner_id == user.id)))
    )
    if count >= MAX_SUBSCRIPTIONS:
        errors.append({"loc": ["body"], "msg": f"at most {MAX_SUBSCRIPTIONS} webhooks each"})
    if errors:
        raise InvalidInput("Some fields of the webhook are not valid.", errors=errors)
    found = WebhookSubscription(
        owner_id=user.id,
        project_id=project.id if project is not None else None,
        url=url,
        events=list(dict.fromkeys(events)),
        secret="whsec_" + _b64(secrets.token_bytes(24)),
        state="active",
        paused_reason="",
        failures_in_a_row=0,
    )
    session.add(found)
    session.flush()
    _forget_wanted(session)
    return found


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def mine(session: Session, user: User) -> list[WebhookSubscription]:
    stmt = select(WebhookSubscription).where(WebhookSubscription.owner_id == user.id)
    return list(session.scalars(stmt.order_by(WebhookSubscription.created_at)))


def get(session: Session, user: User, subscription_id: uuid.UUID) -> WebhookSubscription:
    found = session.get(WebhookSubscription, subscription_id)
    if found is None or (found.owner_id != user.id and not user.is_admin):
        raise NotFound(f"You have no webhook {subscription_id}.")
    return found


def change(
    session: Session, found: WebhookSubscription, events: list[str] | None, active: bool | None
) -> WebhookSubscription:
    if events is not None:
        wrong = [e for e in events if e not in EVENTS]
        if not events or wrong:
            raise InvalidInput.field(["body", "events"], f"one or more of {', '.join(EVENTS)}")
        found.events = list(dict.fromkeys(events))
    if active is not None:
        found.state = "active" if active else "paused"
        found.paused_reason = "" if active else "paused by its owner"
        if active:
            found.failures_in_a_row = 0
    session.flush()
    _forget_wanted(session)
    return found


def send_test(session: Session, found: WebhookSubscription) -> Event:
    """A ``webhook.test`` event for this subscription only (sent even when it is paused)."""
    event = Event(
        kind=TEST_EVENT,
        user_id=found.owner_id,
        subscription_id=found.id,
        payload={"test": True, "webhook": str(found.id)},
        fanned_out=False,
    )
    session.add(event)
    session.flush()
    return event


def deliveries(session: Session, found: WebhookSubscription, limit: int = 100) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == found.id)
    return list(session.scalars(stmt.order_by(WebhookDelivery.created_at.desc()).limit(limit)))


def deliveries_with_kinds(
    session: Session, found: WebhookSubscription, limit: int = 100
) -> list[tuple[WebhookDelivery, str]]:
    """Its deliveries, newest first, each with the kind of event it carries (one query)."""
    stmt = (
        select(WebhookDelivery, Event.kind)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.subscription_id == found.id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(limit)
    )
    return [(delivery, kind) for delivery, kind in session.execute(stmt)]


class LastError(NamedTuple):
    words: str  # the receiver's status ("HTTP 500") or why it could not be sent
    at: datetime | None  # when that try was made


def last_errors(session: Session, found: list[WebhookSubscription]) -> dict[uuid.UUID, LastError]:
    """For each of these subscriptions that has one, the answer of the last try of its newest delivery that
    has not got through (still being retried, or given up on)."""
    ids = [sub.id for sub in found]
    if not ids:
        return {}
    newest = (
        select(WebhookDelivery.subscription_id, func.max(WebhookDelivery.created_at).label("at"))
        .where(
            WebhookDelivery.subscription_id.in_(ids),
            WebhookDelivery.state != "delivered",
            WebhookDelivery.attempts > 0,
        )
        .group_by(WebhookDelivery.subscription_id)
        .subquery()
    )
    rows = session.scalars(
        select(WebhookDelivery).join(
            newest,
            (WebhookDelivery.subscription_id == newest.c.subscription_id)
            & (WebhookDelivery.created_at == newest.c.at),
        )
    )
    errors = {}
    for delivery in rows:
        words = delivery.last_error
        if delivery.last_status is not None:
            words = f"HTTP {delivery.last_status}" + (f": {words}" if words else "")
        last = delivery.tries[-1] if delivery.tries else {}
        at = datetime.fromisoformat(last["at"]) if isinstance(last.get("at"), str) else None
        errors[delivery.subscription_id] = LastError(words or "no answer", at)
    return errors


def redeliver(session: Session, found: WebhookSubscription, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again now (whatever became of it), as a fresh series of tries."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.subscription_id != found.id:
        raise NotFound(f"Webhook {found.id} has no delivery {delivery_id}.")
    delivery.state, delivery.attempts, delivery.next_try_at = "pending", 0, utcnow()
    session.flush()
    return delivery
