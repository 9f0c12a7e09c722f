"""Single sign-on: which provider's subject is which account, and the ID tokens already used."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import UTCDateTime, new_id, utcnow


class SsoIdentity(Base):
    """An account's identity at an OpenID provider: the provider's stable ``sub``, never the e-mail, says
    who logs in once the two are linked."""

    __tablename__ = "sso_identities"
    __table_args__ = (Index("ix_sso_identities_provider_subject", "provider", "subject", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # What the provider's roles claim granted at the last login, to take back when the claim stops giving it:
    # {"admin": true, "projects": {"<project id>": {"role": "manager", "was": "viewer" | null}}}.
    granted: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class SsoUsedToken(Base):
    """An ID token (its SHA-256) or one-time code that was used: the same one again is a replay. Kept until
    it would have expired anyway."""

    __tablename__ = "sso_used_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
