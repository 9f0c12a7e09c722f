"""Browser sessions, kept in the database so that they can be ended: at logout, and for every browser of
an account when its password changes or it is deactivated.

The browser holds a random secret (in a signed cookie, see ``labcloud.web.session``); the database holds
its SHA-256, the user, and an expiry that moves on while the session is used. A session lasts
``access_token_minutes`` after its last renewal; it is renewed once half of that has passed.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labcloud.db.models import BrowserSession, User
from labcloud.db.types import utcnow
from labcloud.settings import Settings


@dataclass
class Live:
    row: BrowserSession
    user: User


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def lifetime(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.access_token_minutes)


def start(session: Session, settings: Settings, user: User) -> tuple[BrowserSession, str]:
    """A new session for ``user``; the row and the secret for the cookie (never stored)."""
    now = utcnow()
    session.execute(delete(BrowserSession).where(BrowserSession.expires_at < now))  # keep the table small
    secret = secrets.token_urlsafe(32)
    row = BrowserSession(
        user_id=user.id,
        secret_hash=_digest(secret),
        token_version=user.token_version,
        created_at=now,
        expires_at=now + lifetime(settings),
    )
    session.add(row)
    session.flush()
    return row, secret


def find(session: Session, secret: str) -> Live | None:
    """The live session with this secret and its active user, or None (unknown, ended, expired, or the
    user's password changed or the account was deactivated since)."""
    found = session.execute(
        select(BrowserSession, User)
        .join(User, BrowserSession.user_id == User.id)
        .where(BrowserSession.secret_hash == _digest(secret))
    ).first()
    if found is None:
        return None
    row, user = found
    if row.expires_at <= utcnow() or not user.is_active or row.token_version != user.token_version:
        return None
    return Live(row, user)


def is_live(session: Session, session_id: uuid.UUID) -> bool:
    """Whether the session with this id still exists and has not expired (for tokens issued to it)."""
    row = session.get(BrowserSession, session_id)
    return row is not None and row.expires_at > utcnow()


def renew_if_due(settings: Settings, row: BrowserSession) -> bool:
    """Move the expiry on once half of the lifetime has passed; whether it was moved."""
    now = utcnow()
    if row.expires_at - now > lifetime(settings) / 2:
        return False
    row.expires_at = now + lifetime(settings)
    return True


def end(session: Session, session_id: uuid.UUID) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.id == session_id))


def end_all(session: Session, user: User) -> None:
    """End every browser session of ``user`` (password change, deactivation)."""
    session.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id))
