"""E-mail: telling people their jobs ended, through the installation's SMTP server.

``smtp_url`` says how to reach it: ``smtp://[user:password@]host[:port]`` (STARTTLS when the server
offers it, required with a login or ``?starttls=required``), or ``smtps://...`` (TLS from the first byte);
``mail_from`` is the sender. Nothing is sent when ``smtp_url`` is empty.

The sender (:class:`MailSender`, on the leader, beside the webhooks') reads the same outbox of events: a
job's end becomes a mail to its owner when their preference (``notify_email``: always, failure, never), or
the job's own (``notify`` at submit), says so. It waits ``mail_digest_window_s`` after a user's first
unmailed end, so that many jobs ending together make one digest instead of a flood. A mail that could not
be sent is tried again (the events stay unmailed), so a mail is sent at least once; a slow or dead SMTP
server only delays mail, never a job.

The same decision tells a user's chat channel (:mod:`.chat`), when they set one, after the mail; the
sender runs whenever the installation sends mail or any user may have a channel. A chat message that could
not be sent waits in the outbox (``chat.retry``) and this sender tries it again when it is due.

A webhook paused because it kept failing (``webhook.paused``) is told to its owner at once, whatever their
preference for jobs: nothing else would tell them that their receiver hears nothing any more.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import bindparam, or_, select, update

from labcloud.db.engine import Database
from labcloud.db.models import Event, Job, User
from labcloud.db.types import utcnow
from labcloud.execution.loops import Loop
from labcloud.services import chat
from labcloud.services.webhooks import JOB_EVENTS, PAUSED_EVENT
from labcloud.settings import Settings

log = logging.getLogger(__name__)

MAILED = (*JOB_EVENTS, PAUSED_EVENT, chat.RETRY)  # the events this sender acts on


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    tls: bool  # from the first byte (smtps)
    starttls: str  # "auto", "required" or "never"
    user: str
    password: str


def parse(url: str) -> Smtp:
    """``smtp://[user:password@]host[:port][?starttls=auto|required|never]`` or ``smtps://...``."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("smtp_url must be smtp://host[:port] or smtps://host[:port]")
    tls = parts.scheme == "smtps"
    starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
    if starttls not in ("auto", "required", "never"):
        raise ValueError("starttls must be auto, required or never")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if user and not tls and starttls == "auto":
        starttls = "required"  # a password never goes over an unencrypted line
    return Smtp(parts.hostname, parts.port or (465 if tls else 587), tls, starttls, user, password)


def send(settings: Settings, to: str, subject: str, text: str, html_body: str) -> None:
    """Send one mail (a text and an HTML part); OSError or smtplib.SMTPException when it cannot."""
    server = parse(settings.smtp_url)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
    timeout = settings.smtp_timeout_s
    client: smtplib.SMTP
    if server.tls:
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    with client:
        client.ehlo()
        if not server.tls and server.starttls != "never":
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            elif server.starttls == "required":
                raise smtplib.SMTPException("the SMTP server offers no STARTTLS")
        if server.user:
            client.login(server.user, server.password)
        client.send_message(message)


def send_link(settings: Settings, to: str, subject: str, intro: str, link: str, expires: str) -> None:
    """A mail with one link (a password reset, an invitation): text and HTML."""
    text = f"{intro}\n\n{link}\n\nThe link works once, for {expires}. If you did not expect it, ignore it.\n"
    html_body = (
        f"<!doctype html><html><body><p>{html.escape(intro)}</p>"
        f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>'
        f"<p>The link works once, for {html.escape(expires)}. If you did not expect it, ignore it.</p>"
        "</body></html>"
    )
    send(settings, to, subject, text, html_body)


# --- what to send -------------------------------------------------------------------------------------------


def wanted(preference: str, kind: str) -> bool:
    if preference == "never":
        return False
    if preference == "failure":
        return kind == "job.failed"
    return True


def _duration(job: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(job["started_at"])
        end = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return "-"
    seconds = max(int((end - start).total_seconds()), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def compose(settings: Settings, jobs: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(subject, text, html) of the mail telling of these ended jobs: one, or a digest of several."""
    base = settings.public_url.rstrip("/")
    lines, rows = [], []
    for job in jobs:
        name = job.get("title") or job.get("name") or job.get("app")
        state = job.get("state", "")
        reason = f" ({job['reason']})" if job.get("reason") else ""
        link = f"{base}/jobs/{job['id']}"
        lines.append(
            f"- {name}: {state}{reason}, {job.get('app')} {job.get('version')}, took {_duration(job)}\n"
            f"  {job.get('message') or ''}\n  {link}\n  outputs: {link}#outputs"
        )
        rows.append(
            "<tr>"
            f'<td><a href="{html.escape(link)}">{html.escape(str(name))}</a></td>'
            f"<td>{html.escape(state + reason)}</td>"
            f"<td>{html.escape(str(job.get('app')))} {html.escape(str(job.get('version')))}</td>"
            f"<td>{_duration(job)}</td>"
            f"<td>{html.escape(job.get('message') or '')}</td>"
            f'<td><a href="{html.escape(link)}#outputs">outputs</a></td>'
            "</tr>"
        )
    if len(jobs) == 1:
        job = jobs[0]
        subject = f"labcloud: {job.get('title') or job.get('name') or job.get('app')} {job.get('state')}"
    else:
        failed = sum(1 for j in jobs if j.get("state") == "failed")
        subject = f"labcloud: {len(jobs)} jobs ended ({failed} failed)"
    text = "Your jobs on labcloud:\n\n" + "\n\n".join(lines) + "\n"
    head = "<tr><th>job</th><th>state</th><th>app</th><th>took</th><th>message</th><th></th></tr>"
    html_body = (
        "<!doctype html><html><body><p>Your jobs on labcloud:</p>"
        f"<table>{head}{''.join(rows)}</table></body></html>"
    )
    return subject, text, html_body


def compose_paused(settings: Settings, webhook: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of the mail telling an owner that their webhook was paused."""
    url, reason = str(webhook.get("url")), str(webhook.get("reason"))
    last = str(webhook.get("last_error") or "")
    resume = f"PATCH /api/v1/webhooks/{webhook.get('id')}"
    body = '{"active": true}'
    subject = "labcloud: your webhook was paused"
    page = f"{settings.public_url.rstrip('/')}/account/webhooks/{webhook.get('id')}"
    text = (
        f"Your webhook {url} was paused: {reason} (last answer: {last or '-'}).\n\n"
        "It hears no events while paused. Once the receiver works again, resume it on its page, where\n"
        f"every try is listed:\n  {page}\nor with\n  {resume} {body}\n"
    )
    html_body = (
        f"<!doctype html><html><body><p>Your webhook <code>{html.escape(url)}</code> was paused: "
        f"{html.escape(reason)} (last answer: {html.escape(last or '-')}).</p>"
        "<p>It hears no events while paused. Once the receiver works again, resume it on "
        f'<a href="{html.escape(page)}">its page</a>, where every try is listed, or with '
        f"<code>{html.escape(resume)} {html.escape(body)}</code>.</p></body></html>"
    )
    return subject, text, html_body


# The sender's statements, built once (it asks every second): mark the events nobody is mailed about; read
# what is due (a user's job ends once the oldest is a digest window old, webhook pauses, chat retries).
_MARK_UNMAILED = (
    update(Event)
    .where(Event.mailed.is_(False), or_(Event.kind.not_in(MAILED), Event.user_id.is_(None)))
    .values(mailed=True)
    .execution_options(synchronize_session=False)
)
_DUE_USERS = (
    select(Event.user_id)
    .where(Event.mailed.is_(False), Event.kind.in_(JOB_EVENTS), Event.created_at <= bindparam("cutoff"))
    .distinct()
)
_DUE = (
    select(Event)
    .where(
        Event.mailed.is_(False),
        or_(
            Event.kind.in_((PAUSED_EVENT, chat.RETRY)),
            Event.kind.in_(JOB_EVENTS) & Event.user_id.in_(_DUE_USERS),
        ),
    )
    .order_by(Event.id)
    .limit(500)
)


class MailSender(Loop):
    """On the leader: mails each user's ended jobs once their digest window has passed."""

    def __init__(self, db: Database, settings: Settings, interval_s: float = 1.0) -> None:
        super().__init__("mail", interval_s)
        self.db = db
        self.settings = settings
        self._wait_until: dict[Any, float] = {}  # a user whose last send failed

    def step(self) -> None:
        """Only what is due is read: a user's job ends wait until the oldest of them is a digest window old
        (read again every second while they wait, a thousand jobs' ends cost a second of CPU a minute)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.mail_digest_window_s)
        with self.db.session() as session:
            session.execute(_MARK_UNMAILED)
            pending = list(session.scalars(_DUE, {"cutoff": cutoff}))
        for event in pending:
            waiting = self._wait_until.get(event.user_id, 0.0) > time.monotonic()
            if event.kind == PAUSED_EVENT and event.user_id is not None and not waiting:
                self._mail_paused(event)
            elif event.kind == chat.RETRY and event.user_id is not None and chat.due(event):
                self._chat_again(event)
        by_user: dict[Any, list[Event]] = defaultdict(list)
        for event in pending:
            if event.kind in JOB_EVENTS and event.user_id is not None:
                by_user[event.user_id].append(event)
        for user_id, events in by_user.items():
            if self._wait_until.get(user_id, 0.0) > time.monotonic():
                continue
            self._mail(user_id, events)

    def _mail_paused(self, event: Event) -> None:
        with self.db.session() as session:
            user = session.get(User, event.user_id)
        if user is not None and user.is_active and self.settings.smtp_url:
            subject, text, html_body = compose_paused(self.settings, dict(event.payload.get("webhook") or {}))
            if not self._send(user, subject, text, html_body):
                return
        with self.db.session() as session:
            session.execute(update(Event).where(Event.id == event.id).values(mailed=True))

    def _send(self, user: User, subject: str, text: str, html_body: str) -> bool:
        """Send; when it cannot, wait ``mail_retry_s`` before trying this user again."""
        try:
            send(self.settings, user.email, subject, text, html_body)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            wait = self.settings.mail_retry_s
            log.warning("mail to %s not sent (tried again in %.0f s): %s", user.email, wait, exc)
            self._wait_until[user.id] = time.monotonic() + wait
            return False
        return True

    def _mail(self, user_id: Any, events: list[Event]) -> None:
        with self.db.session() as session:
            user = session.get(User, user_id)
            ids = [found for e in events if (found := _job_id(e)) is not None]
            overrides: dict[Any, str | None] = {}
            if ids:
                overrides = {
                    i: n for i, n in session.execute(select(Job.id, Job.notify).where(Job.id.in_(ids)))
                }
        jobs = []
        for event in events:
            job = dict(event.payload.get("job") or {})
            preference = overrides.get(_job_id(event)) or (user.notify_email if user else "never")
            if user is not None and user.is_active and wanted(preference, event.kind):
                jobs.append(job)
        if jobs and user is not None and self.settings.smtp_url:
            subject, text, html_body = compose(self.settings, jobs)
            if not self._send(user, subject, text, html_body):
                return
        again = None
        if jobs and user is not None and user.notify_apprise_url:  # (after the mail: told once)
            title, body = chat.compose(self.settings, jobs)
            if not chat.tell(user.notify_apprise_url, title, body):
                again = chat.retry_event(user.id, title, body, 1, self.settings.mail_retry_s)
        self._wait_until.pop(user_id, None)
        with self.db.session() as session:
            session.execute(update(Event).where(Event.id.in_([e.id for e in events])).values(mailed=True))
            if again is not None:
                session.add(again)

    def _chat_again(self, event: Event) -> None:
        """A chat message that failed before: sent now, or put off again, or (after the last try) dropped."""
        with self.db.session() as session:
            user = session.get(User, event.user_id)
        title, body = str(event.payload.get("title", "")), str(event.payload.get("body", ""))
        tries = int(event.payload.get("tries", 1)) + 1
        again = None
        told = user is None or not user.is_active or not user.notify_apprise_url  # (nobody to tell)
        if not told and user is not None and user.notify_apprise_url:
            told = chat.tell(user.notify_apprise_url, title, body)
        if not told and user is not None and tries < chat.RETRY_LIMIT:
            again = chat.retry_event(user.id, title, body, tries, self.settings.mail_retry_s)
        elif not told:
            log.warning("a chat message was given up after %d tries", tries)
        with self.db.session() as session:  # (the old row done, the next try a new one: one commit)
            session.execute(update(Event).where(Event.id == event.id).values(mailed=True))
            if again is not None:
                session.add(again)


def _job_id(event: Event) -> uuid.UUID | None:
    try:
        return uuid.UUID(str((event.payload.get("job") or {}).get("id")))
    except ValueError:
        return None
