"""Accounts: users, their API tokens, browser sessions and login attempts."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from labcloud.db.models.base import Base
from labcloud.db.types import UTCDateTime, new_id, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password change and deactivation: login tokens issued before stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Storage: a per-user limit (None: the installation's default) for the user's personal project, and
    # the bytes its files hold (kept equal to the personal project's ``storage_used_bytes``, which counts).
    storage_limit_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # When a job of theirs ends, an e-mail: "always", "failure" (failed only) or "never" (a job may say
    # otherwise when it is submitted).
    notify_email: Mapped[str] = mapped_column(String(16), default="always")
    # The same news by chat, through Apprise (an apprise URL, e.g. slack://... or json://...): a secret,
    # never shown back but for its scheme; "" for none.
    notify_apprise_url: Mapped[str] = mapped_column(Text, default="", server_default="")
    jobs_submitted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the last run number
    # Its password was issued by an administrator: the web asks for one of its own before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @property
    def notify_apprise(self) -> str | None:
        """The scheme of the chat channel (what may be shown of it), or None."""
        return self.notify_apprise_url.split("://", 1)[0] if self.notify_apprise_url else None

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """A personal API token. Only a SHA-256 of the secret is kept: the secret is random, so no slow hash."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    user: Mapped[User] = relationship(back_populates="tokens")


class BrowserSession(Base):
    """A browser logged in. Its cookie carries a random secret of which only a SHA-256 is kept; deleting
    the row (logout, password change, deactivation) ends the session wherever that cookie is."""

    __tablename__ = "browser_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The user's token_version at login: a later password change or deactivation ends the session.
    token_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # moved on while in use


class LoginAttempt(Base):
    """Recent login attempts under one key (an account at an address, or an address), counted in the
    database so that every server replica throttles from the same counts. The key is a SHA-256, so no
    email address typed into the form is kept."""

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # every change bumps it: compare-and-set
