"""What a single sign-on keeps between requests without a table: signed by this server (so any replica
reads it), short-lived, and for one purpose each (its audience).

- the browser's pending login (state, nonce, PKCE verifier; in a cookie),
- the command line's pending device login (the provider's device code),
- the one-time code a loopback login hands to the command line, redeemed with its PKCE verifier.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import jwt
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import User
from labcloud.services import sso
from labcloud.services.sso import LoginRefused
from labcloud.settings import Settings

PENDING_AUDIENCE = "labcloud-sso-pending"
DEVICE_AUDIENCE = "labcloud-sso-device"
CLI_CODE_AUDIENCE = "labcloud-sso-cli"
PENDING_SECONDS = 600
CLI_CODE_SECONDS = 120


def seal(claims: dict[str, Any], settings: Settings, audience: str, seconds: int) -> str:
    body = {**claims, "aud": audience, "exp": int(time.time()) + seconds}
    return jwt.encode(body, settings.signing_key, algorithm=security.JWT_ALGORITHM)


def unseal(raw: str, settings: Settings, audience: str) -> dict[str, Any] | None:
    """The claims when this server sealed ``raw`` for ``audience`` and it has not expired; else None."""
    try:
        claims: dict[str, Any] = jwt.decode(
            raw, settings.signing_key, algorithms=[security.JWT_ALGORITHM], audience=audience
        )
    except jwt.PyJWTError:
        return None
    return claims


def issue_cli_code(settings: Settings, user: User, challenge: str) -> str:
    """A code that the loopback login gives the command line: it works once, within two minutes, and only
    with the verifier whose challenge the command line sent at the start."""
    claims = {
        "sub": str(user.id),
        "ver": user.token_version,
        "ch": challenge,
        "jti": secrets.token_urlsafe(16),
    }
    return seal(claims, settings, CLI_CODE_AUDIENCE, CLI_CODE_SECONDS)


def redeem_cli_code(session: Session, settings: Settings, code: str, verifier: str) -> User:
    claims = unseal(code, settings, CLI_CODE_AUDIENCE)
    if claims is None or not secrets.compare_digest(str(claims.get("ch", "")), sso.pkce_challenge(verifier)):
        raise LoginRefused("cli_code", "This login code is not valid (expired, or not this client's).")
    sso.use_once(session, sso.digest("cli:" + str(claims["jti"])), float(claims["exp"]))
    try:
        user = session.get(User, uuid.UUID(str(claims["sub"])))
    except ValueError:
        user = None
    if user is None or not user.is_active or user.token_version != claims.get("ver"):
        raise LoginRefused("cli_code", "This login code is not valid any more.")
    return user
