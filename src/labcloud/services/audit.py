"""The audit log: security-relevant actions, who did them, on what, from where.

Services record an event with :func:`record` in the session of the change it describes, so it commits
(or rolls back) with that change: nothing is logged that did not happen, and nothing happens unlogged. A
failed login changes nothing, so it is written on its own (:func:`record_apart`).

Who and from where come from the *scope* of the work: a request's (its client address as the server
determined it, which believes ``X-Forwarded-For`` only from ``trusted_proxies``, its user agent, and the
account or token that authenticated), a command's on the server's shell (``cli:<os user>``), or else the
server itself (its leader's housekeeping). :class:`AuditScope` is set per request by
:class:`AuditScopeMiddleware`; the authenticating code fills in the actor (:func:`acting_user`). The scope
is one mutable object per request, so what a dependency run in the thread pool learns is seen by the
handler run afterwards (a context variable set there would not be).
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from labcloud.db.models import AuditEvent, User
from labcloud.db.types import utcnow
from labcloud.settings import Settings

log = logging.getLogger(__name__)

MAX_DETAIL_TEXT = 500  # characters of a string in the details
MAX_USER_AGENT = 400


@dataclass
class Actor:
    kind: str  # user | system | anonymous
    id: uuid.UUID | None = None
    email: str | None = None
    label: str = ""
    token_id: uuid.UUID | None = None

    @classmethod
    def of_user(cls, user: User, token_id: uuid.UUID | None = None, label: str = "") -> Actor:
        return cls("user", user.id, user.email, label, token_id)


SERVER = Actor("system", label="server")


@dataclass
class AuditScope:
    """Where the work comes from: one per request (or per command run on the server's shell). A request's
    address, agent and face are read from its ASGI scope only when an event is written (most requests
    write none)."""

    actor: Actor = field(default_factory=lambda: Actor("anonymous"))
    via_: str = ""  # cli | server; a request's is api or web
    request: Scope | None = None

    @property
    def ip(self) -> str | None:
        client = self.request.get("client") if self.request is not None else None
        return str(client[0])[:64] if client else None

    @property
    def user_agent(self) -> str | None:
        if self.request is None:
            return None
        agent = next((v for k, v in self.request.get("headers", []) if k == b"user-agent"), b"")
        return _text(agent.decode("latin-1"), MAX_USER_AGENT) or None

    @property
    def via(self) -> str:
        if self.request is None:
            return self.via_
        return "api" if str(self.request.get("path", "")).startswith(("/api/", "/ga4gh/")) else "web"


_scope: contextvars.ContextVar[AuditScope | None] = contextvars.ContextVar("labcloud_audit", default=None)


def current_scope() -> AuditScope:
    return _scope.get() or AuditScope(actor=SERVER, via_="server")


def shell_scope() -> AuditScope:
    """A command run on the server's shell: ``cli:<os user>``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    return AuditScope(actor=Actor("system", label=f"cli:{who}"), via_="cli")


@contextlib.contextmanager
def scoped(scope: AuditScope) -> Iterator[AuditScope]:
    """Run a block (a CLI command, a test) as ``scope``."""
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def acting_user(user: User, token_id: uuid.UUID | None = None, token_prefix: str | None = None) -> None:
    """The request's caller is now known (its credential checked): its events name it."""
    scope = _scope.get()
    if scope is not None:
        label = f"token {token_prefix}" if token_prefix else ""
        scope.actor = Actor.of_user(user, token_id, label)


class AuditScopeMiddleware:
    """A fresh :class:`AuditScope` for every HTTP request, with its client address (as the proxy headers
    middleware outside it left it) and user agent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _scope.set(AuditScope(request=scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _scope.reset(token)


def _text(value: str, limit: int) -> str:
    """A string fit to keep: printable, valid text, bounded."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value[:limit])
    return cleaned.encode("utf-8", "replace").decode("utf-8")


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _text(value, MAX_DETAIL_TEXT)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping) and depth < 4:
        return {str(k)[:64]: _clean(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple | set) and depth < 4:
        return [_clean(v, depth + 1) for v in list(value)[:50]]
    return _text(str(value), MAX_DETAIL_TEXT)


def _event(
    action: str,
    target_kind: str | None,
    target_id: Any,
    details: Mapping[str, Any] | None,
    actor: Actor | None,
) -> AuditEvent:
    scope = current_scope()
    who = actor or scope.actor
    extra = dict(details or {})
    if scope.via:
        extra.setdefault("via", scope.via)
    return AuditEvent(
        at=utcnow(),
        actor_kind=who.kind,
        actor_id=who.id,
        actor_email=who.email,
        actor_label=_text(who.label, 200),
        token_id=who.token_id,
        action=action,
        target_kind=target_kind,
        target_id=None if target_id is None else _text(str(target_id), 200),
        details=_clean(extra),
        ip=scope.ip,
        user_agent=scope.user_agent,
    )


def record(
    session: Session,
    action: str,
    target_kind: str | None = None,
    target_id: Any = None,
    details: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
) -> None:
    """Add an event to ``session``: it commits with the change it describes."""
    session.add(_event(action, target_kind, target_id, details, actor))


def record_apart(
    engine: Engine,
    action: str,
    target_kind: str | None = None,
    target_id: Any = None,
    details: Mapping[str, Any] | None = None,
    *,
    actor: Actor | None = None,
) -> None:
    """Write an event in a transaction of its own (for what is refused and so changes nothing)."""
    with Session(engine) as session, session.begin():
        record(session, action, target_kind, target_id, details, actor=actor)


def record_for(
    settings: Settings,
    action: str,
    target_kind: str | None = None,
    target_id: Any = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Write an event into the installation's database after work that is not a transaction of it (a
    backup, a restore); logged, never raised, when it cannot be written: the work is done either way."""
    from labcloud.db.engine import Database

    db = Database(settings)
    try:
        record_apart(db.engine, action, target_kind, target_id, details)
    except Exception as exc:
        log.warning("audit event %s not recorded: %s", action, exc)
    finally:
        db.dispose()


def prune(engine: Engine, keep_days: int) -> int:
    """Forget events older than ``keep_days`` (0: keep them all)."""
    if keep_days <= 0:
        return 0
    with engine.begin() as conn:
        done = conn.execute(delete(AuditEvent).where(AuditEvent.at < utcnow() - timedelta(days=keep_days)))
    return int(done.rowcount or 0)
