"""Who is calling: login tokens, personal API tokens and their scopes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import ApiToken, User
from labcloud.db.types import utcnow
from labcloud.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from labcloud.security import ALL_SCOPES, Scope
from labcloud.services import audit, sessions
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

# Writing last_used_at on every request would turn every read into a write; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass
class Principal:
    user: User
    scopes: frozenset[str]
    token_id: uuid.UUID | None  # the API token used, None for a login token
    session_id: uuid.UUID | None = None  # the browser session behind it, if any

    def has_scope(self, scope: Scope) -> bool:
        if scope == Scope.ADMIN and not self.user.is_admin:
            return False
        return scope.value in self.scopes


def scopes_for(user: User) -> list[str]:
    return [s.value for s in ALL_SCOPES if s != Scope.ADMIN or user.is_admin]


def login_token(user: User, settings: Settings, session_id: uuid.UUID | None = None) -> tuple[str, int]:
    """A login token; one issued to a browser session (``session_id``) stops working when it ends."""
    return security.issue_access_token(
        user.id,
        user.token_version,
        scopes_for(user),
        settings.signing_key,
        settings.access_token_minutes,
        session_id=session_id,
    )


def authenticate_bearer(session: Session, settings: Settings, credential: str) -> Principal:
    """Resolve an ``Authorization: Bearer`` credential, either kind, or raise 401."""
    if security.looks_like_api_token(credential):
        return _from_api_token(session, credential)
    claims = security.decode_access_token(credential, settings.signing_key)
    if claims is None:
        raise Unauthorized("The token is invalid or has expired; log in again.")
    try:
        user_id = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"]) if "sid" in claims else None
    except (ValueError, TypeError, AttributeError):
        raise Unauthorized("The token is invalid; log in again.") from None
    user = session.get(User, user_id)
    if user is None or not user.is_active or claims.get("ver") != user.token_version:
        raise Unauthorized("The token is no longer valid; log in again.")
    if session_id is not None and not sessions.is_live(session, session_id):
        raise Unauthorized("The browser session this token was issued to has ended; log in again.")
    audit.acting_user(user)
    return Principal(
        user=user, scopes=frozenset(claims.get("scopes", [])), token_id=None, session_id=session_id
    )


def _from_api_token(session: Session, secret: str) -> Principal:
    row = session.execute(
        select(ApiToken, User)
        .join(User, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == security.digest_api_token(secret))
    ).first()
    if row is None:
        raise Unauthorized("The API token is not valid.")
    token, user = row
    now = utcnow()
    if token.revoked_at is not None:
        raise Unauthorized("The API token has been revoked.")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("The API token has expired.")
    if not user.is_active:
        raise Unauthorized("The account is deactivated.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
    audit.acting_user(user, token.id, token.prefix)
    return Principal(user=user, scopes=frozenset(token.scopes), token_id=token.id)


def create_api_token(
    session: Session,
    settings: Settings,
    user: User,
    *,
    name: str,
    scopes: list[Scope],
    expires_at: datetime | None,
    caller_scopes: Iterable[str],
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the secret, which is never available again.

    A token never gets more than the credential that creates it: ``scopes`` must be among
    ``caller_scopes`` (a read/write token cannot mint an admin one, even for an admin)."""
    if not scopes:
        raise InvalidInput.field(["body", "scopes"], "give at least one scope: read, write or admin")
    if Scope.ADMIN in scopes and not user.is_admin:
        raise Forbidden("Only admins can create tokens with the admin scope.")
    beyond = sorted({s.value for s in scopes} - set(caller_scopes))
    if beyond:
        raise Forbidden(
            f"A token cannot give more than the credential that creates it; yours lacks: {', '.join(beyond)}."
        )
    now = utcnow()
    longest = now + timedelta(days=settings.api_token_max_days)
    if expires_at is None:
        expires_at = longest
    if expires_at <= now:
        raise InvalidInput.field(["body", "expires_at"], "the expiry must be in the future")
    if expires_at > longest:
        raise InvalidInput.field(
            ["body", "expires_at"], f"tokens may last at most {settings.api_token_max_days} days"
        )
    secret, digest, prefix = security.new_api_token()
    token = ApiToken(
        user_id=user.id,
        name=name.strip(),
        scopes=sorted({s.value for s in scopes}),
        token_hash=digest,
        prefix=prefix,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        "token.created",
        "token",
        token.id,
        {"name": token.name, "scopes": token.scopes, "prefix": prefix, "owner": user.email},
    )
    return token, secret


def list_api_tokens(session: Session, user: User, *, limit: int, cursor: str | None) -> Page[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    return paginate(session, stmt, ApiToken.id, limit=limit, cursor=cursor, newest_first=True)


def revoke_api_token(session: Session, user: User, token_id: uuid.UUID) -> None:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id or token.revoked_at is not None:
        raise NotFound(f"You have no API token with id {token_id}.")
    token.revoked_at = utcnow()
    audit.record(session, "token.revoked", "token", token.id, {"name": token.name, "prefix": token.prefix})
