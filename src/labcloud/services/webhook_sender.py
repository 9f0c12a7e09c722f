"""Sending webhooks: the sender (:class:`WebhookSender`, on the leader) fans each new event of the outbox
out into a delivery per subscription that wants it, then posts the due deliveries: ``webhook-id`` (the
event's id: receivers drop repeats by it), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256
with the subscription's secret, the ``standardwebhooks`` library). A try that fails is tried again after a
doubling wait (``webhook_retry_s``, ``webhook_max_attempts`` tries: hours), each try's answer is kept, and
a subscription that gave up on ``webhook_pause_after`` events in a row is paused. Sending never holds a job
up: it runs on its own thread, a try at a time per delivery, with a time limit. The outbox and the
subscriptions are :mod:`labcloud.services.webhooks`."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from labcloud.db.engine import Database
from labcloud.db.models import Event, WebhookDelivery, WebhookSubscription
from labcloud.db.types import utcnow
from labcloud.execution.loops import Loop
from labcloud.services import url_fetch
from labcloud.services.webhooks import PAUSED_EVENT
from labcloud.settings import Settings

log = logging.getLogger(__name__)

BATCH = 50  # events fanned out, deliveries tried, per round


def fan_out(session: Session) -> int:
    """A delivery for each subscription that wants each new event; the events marked. How many."""
    events = list(
        session.scalars(select(Event).where(Event.fanned_out.is_(False)).order_by(Event.id).limit(BATCH))
    )
    made = 0
    now = utcnow()
    active: dict[tuple[Any, Any], list[WebhookSubscription]] = {}  # (a round's events share their owners)
    for event in events:
        for sub in _wanting(session, event, active):
            session.add(
                WebhookDelivery(
                    event_id=event.id, subscription_id=sub.id, state="pending", next_try_at=now, tries=[]
                )
            )
            made += 1
    if events:
        session.execute(
            update(Event)
            .where(Event.id.in_([e.id for e in events]))
            .values(fanned_out=True)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return made


def _wanting(
    session: Session, event: Event, active: dict[tuple[Any, Any], list[WebhookSubscription]]
) -> list[WebhookSubscription]:
    if event.subscription_id is not None:  # a test: its own subscription, paused or not
        found = session.get(WebhookSubscription, event.subscription_id)
        return [found] if found is not None else []
    key = (event.user_id, event.project_id)
    if key not in active:
        whose = [WebhookSubscription.owner_id == event.user_id] if event.user_id else []
        if event.project_id is not None:
            whose.append(WebhookSubscription.project_id == event.project_id)
        active[key] = (
            list(
                session.scalars(
                    select(WebhookSubscription).where(WebhookSubscription.state == "active", or_(*whose))
                )
            )
            if whose
            else []
        )
    rows = active[key]
    wanted = []
    for sub in rows:
        # A user's own webhook hears of their jobs; a project's webhook, of the project's.
        if sub.project_id is not None and sub.project_id != event.project_id:
            continue
        if sub.project_id is None and sub.owner_id != event.user_id:
            continue
        if event.kind in sub.events:
            wanted.append(sub)
    return wanted


def body_of(event: Event, settings: Settings) -> bytes:
    data: dict[str, Any] = {
        "type": event.kind,
        "timestamp": event.created_at.isoformat(),
        "data": dict(event.payload),
    }
    job = data["data"].get("job")
    if isinstance(job, dict) and settings.public_url:
        job["url"] = f"{settings.public_url.rstrip('/')}/jobs/{job['id']}"
    return json.dumps(data, separators=(",", ":")).encode()


def try_once(
    settings: Settings, url: str, secret: str, event_id: uuid.UUID, body: bytes
) -> tuple[int | None, str]:
    """Post one delivery; (status or None, error words)."""
    now = utcnow()
    signature = Webhook(secret).sign(str(event_id), now, body.decode())
    headers = {
        "content-type": "application/json",
        "user-agent": "labcloud-webhooks",
        "webhook-id": str(event_id),
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    try:
        status, text = url_fetch.post(
            url,
            body,
            headers,
            timeout_s=settings.webhook_timeout_s,
            allow_private=settings.webhook_allow_private,
        )
    except url_fetch.FetchError as exc:
        return None, str(exc)
    return status, "" if 200 <= status < 300 else text[:200]


def next_wait(settings: Settings, attempts: int) -> timedelta:
    """After the ``attempts``-th failed try: a doubling wait, at most six hours."""
    return timedelta(seconds=min(settings.webhook_retry_s * 2 ** (attempts - 1), 6 * 3600))


def record(
    session: Session, settings: Settings, delivery_id: uuid.UUID, status: int | None, error: str, at: datetime
) -> None:
    """Note a try's answer; schedule the next or give up; pause a subscription that keeps failing."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return
    ok = status is not None and 200 <= status < 300
    delivery.attempts += 1
    delivery.last_status, delivery.last_error = status, error
    delivery.tries = [*delivery.tries, {"at": at.isoformat(), "status": status, "error": error}][-30:]
    sub = session.get(WebhookSubscription, delivery.subscription_id)
    if ok:
        delivery.state, delivery.delivered_at, delivery.next_try_at = "delivered", at, None
        if sub is not None:
            sub.failures_in_a_row = 0
    elif delivery.attempts >= settings.webhook_max_attempts:
        delivery.state, delivery.next_try_at = "failed", None
        if sub is not None:
            sub.failures_in_a_row += 1
            if sub.failures_in_a_row >= settings.webhook_pause_after and sub.state == "active":
                sub.state = "paused"
                sub.paused_reason = f"{sub.failures_in_a_row} events in a row could not be delivered"
                log.warning("webhook %s paused: %s", sub.id, sub.paused_reason)
                _emit_paused(session, sub, error or f"HTTP {status}")
    else:
        delivery.next_try_at = at + next_wait(settings, delivery.attempts)
    session.flush()


def _emit_paused(session: Session, sub: WebhookSubscription, last_error: str) -> None:
    """The owner is told (by the mail sender) that their webhook paused, in the pausing transaction."""
    session.add(
        Event(
            kind=PAUSED_EVENT,
            user_id=sub.owner_id,
            payload={
                "webhook": {
                    "id": str(sub.id),
                    "url": sub.url,
                    "reason": sub.paused_reason,
                    "last_error": last_error[:200],
                }
            },
            fanned_out=True,
        )
    )


class WebhookSender(Loop):
    """On the leader: fans out new events and tries the due deliveries, a few at a time."""

    def __init__(self, db: Database, settings: Settings, interval_s: float = 1.0) -> None:
        super().__init__("webhooks", interval_s, step_first=True)
        self.db = db
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labcloud-webhook")

    def step(self) -> None:
        with self.db.session() as session:
            fan_out(session)
        with self.db.session() as session:
            due = list(
                session.execute(
                    select(WebhookDelivery.id, WebhookSubscription.url, WebhookSubscription.secret, Event)
                    .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
                    .join(Event, Event.id == WebhookDelivery.event_id)
                    .where(WebhookDelivery.state == "pending", WebhookDelivery.next_try_at <= utcnow())
                    .order_by(WebhookDelivery.next_try_at)
                    .limit(BATCH)
                )
            )
            work = [(d, url, secret, e.id, body_of(e, self.settings)) for d, url, secret, e in due]
            # Not again before this try has had its time (a second sender would wait too).
            hold = utcnow() + timedelta(seconds=self.settings.webhook_timeout_s + 5)
            if work:
                session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_([w[0] for w in work]))
                    .values(next_try_at=hold)
                )
        for answer in self.pool.map(lambda w: (w[0], *try_once(self.settings, *w[1:])), work):
            delivery_id, status, error = answer
            with self.db.session() as session:
                record(session, self.settings, delivery_id, status, error, utcnow())

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self.pool.shutdown(wait=False, cancel_futures=True)
