"""Chat: the news of a job's end, as its e-mail says it, to a user's own channel through Apprise.

A user sets one Apprise URL (``notify_apprise_url``: ``slack://...``, ``matrix://...``, ``json://host/path``
and the many others Apprise knows). It is a secret (it often holds a token): stored, never shown back but
for its scheme. Apprise can reach any host, so a URL whose host is on loopback, link-local or a private
network is refused unless ``webhook_allow_private`` (the check is made when it is set, on what its host
resolves to then; a host that resolves to nothing is taken for part of the service's own address, as
Slack's tokens are). The mail sender decides what to tell (the same preference and per-job override as the
e-mail) and tells it after the mail. A message that could not be sent becomes an outbox event of its own
(``chat.retry``, holding the message, its tries and when to try next), so it is tried again with a doubling
wait, after a restart too, and given up (logged) after ``RETRY_LIMIT`` tries; the mail is not sent again.
"""

from __future__ import annotations

import logging
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import apprise

from labcloud.db.models import Event
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput
from labcloud.services import url_fetch
from labcloud.settings import Settings

log = logging.getLogger(__name__)

FIELD: list[str | int] = ["body", "notify_apprise_url"]
RETRY = "chat.retry"  # the outbox event of a message still to send
RETRY_LIMIT = 10  # tries of one message, the first included


def check(settings: Settings, url: str) -> str:
    """The URL to store ("" removes the channel); InvalidInput when Apprise does not know it or its host
    is not allowed."""
    url = url.strip()
    if not url:
        return ""
    if apprise.Apprise.instantiate(url) is None:
        raise InvalidInput.field(FIELD, "not an Apprise URL this server knows")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidInput.field(FIELD, f"not a URL: {exc}") from None
    if host and _resolves(host):  # (a host that is no address, as Slack's tokens, is the service's own)
        try:
            url_fetch._addresses(host, port or 443, settings.webhook_allow_private)
        except url_fetch.FetchError as exc:
            raise InvalidInput.field(FIELD, str(exc)) from None
    return url


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def tell(url: str, title: str, body: str) -> bool:
    """Send one message to the channel; False (logged) when it could not."""
    sender = apprise.Apprise()
    if not sender.add(url):
        log.warning("a chat channel is no longer a valid Apprise URL")
        return False
    ok = bool(sender.notify(title=title, body=body))
    if not ok:
        log.warning("a chat message could not be sent (%s)", url.split("://", 1)[0])
    return ok


def retry_event(user_id: uuid.UUID, title: str, body: str, tries: int, wait_s: float) -> Event:
    """The outbox row of a message that failed its ``tries``-th time: tried again after a doubling wait
    (``wait_s`` first, an hour at most). Written as already fanned out (no webhook hears of it)."""
    due = utcnow() + timedelta(seconds=min(wait_s * 2 ** (tries - 1), 3600.0))
    return Event(
        kind=RETRY,
        user_id=user_id,
        payload={"title": title, "body": body, "tries": tries, "due": due.isoformat()},
        fanned_out=True,
    )


def due(event: Event) -> bool:
    try:
        return datetime.fromisoformat(str(event.payload.get("due"))) <= utcnow()
    except ValueError:
        return True


def compose(settings: Settings, jobs: list[dict[str, Any]]) -> tuple[str, str]:
    """(title, body): each ended job's name, state, reason and link."""
    base = settings.public_url.rstrip("/")
    lines = []
    for job in jobs:
        reason = f" ({job['reason']})" if job.get("reason") else ""
        lines.append(
            f"{job.get('title') or job.get('name') or job.get('app')}: {job.get('state')}{reason} "
            f"{base}/jobs/{job['id']}"
        )
    title = (
        f"labcloud: {len(jobs)} jobs ended" if len(jobs) > 1 else f"labcloud: {lines[0].split(' http')[0]}"
    )
    return title, "\n".join(lines)
