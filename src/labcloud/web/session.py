"""The browser's session cookie and CSRF tokens.

The cookie is signed and holds the secret of a server-side session (``labcloud.services.sessions``), so a
session ends for real: at logout, and for every browser of an account when its password changes or it is
deactivated; a copied cookie is worth nothing after that. The session is renewed while in use (once half
its lifetime has passed), so an open page stays logged in. Next to the secret the cookie carries a random
CSRF secret that every form sends back.

Before login there is no session, so the login form uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request, Response
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import User
from labcloud.services import sessions
from labcloud.settings import Settings

SESSION_COOKIE = "labcloud_session"
LOGIN_CSRF_COOKIE = "labcloud_login_csrf"
FLASH_COOKIE = "labcloud_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_AUDIENCE = "labcloud-web"
_FLASH_AUDIENCE = "labcloud-web-flash"


@dataclass
class BrowserSession:
    """What the cookie holds: the session's secret and the CSRF secret of its forms."""

    secret: str
    csrf: str
    session_id: uuid.UUID | None = None  # known once the session was looked up or started


def start(session: Session, user: User, settings: Settings, csrf: str | None = None) -> BrowserSession:
    """A new server-side session for ``user``; keeps ``csrf`` when replacing one so open forms stay valid."""
    row, secret = sessions.start(session, settings, user)
    return BrowserSession(secret, csrf or secrets.token_urlsafe(32), row.id)


def _sign(claims: dict[str, Any], settings: Settings) -> str:
    return jwt.encode(claims, settings.signing_key, algorithm=security.JWT_ALGORITHM)


def _signed_cookie(request: Request, settings: Settings, name: str, audience: str) -> dict[str, Any] | None:
    """The claims of the cookie ``name`` if this server signed them for ``audience`` and they have not
    expired; None for a missing, forged or stale cookie."""
    raw = request.cookies.get(name)
    if not raw:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            raw, settings.signing_key, algorithms=[security.JWT_ALGORITHM], audience=audience
        )
    except jwt.PyJWTError:
        return None
    return claims


def read(request: Request, settings: Settings) -> BrowserSession | None:
    """The cookie's content if its signature holds; whether the session is live is the database's to say."""
    try:
        claims = _signed_cookie(request, settings, SESSION_COOKIE, _AUDIENCE)
        return None if claims is None else BrowserSession(str(claims["sid"]), str(claims["csrf"]))
    except (KeyError, TypeError, ValueError):
        return None


def secure_cookies(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.base_url.startswith("https://")


def store(response: Response, request: Request, settings: Settings, browser: BrowserSession) -> None:
    """Set (or renew) the cookie; it lasts as long as the session does unless the session is renewed."""
    lifetime = int(sessions.lifetime(settings).total_seconds())
    claims = {
        "sid": browser.secret,
        "csrf": browser.csrf,
        "exp": int(time.time()) + lifetime,
        "aud": _AUDIENCE,
    }
    response.set_cookie(
        SESSION_COOKIE,
        _sign(claims, settings),
        max_age=lifetime,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        path="/",
    )


def clear(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def login_csrf(request: Request) -> str:
    """The login form's CSRF value: the one already in the browser's cookie, or a new one."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)


def store_login_csrf(response: Response, request: Request, settings: Settings, value: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request, settings),
        path="/login",
    )


# ----------------------------------------------------------------------------------------------- flash


def flash(response: Response, settings: Settings, message: str, kind: str = "ok") -> None:
    """A message for the next page (after a redirect). Signed, so nobody else can put words there."""
    value = _sign(
        {"m": message[:500], "k": kind, "aud": _FLASH_AUDIENCE, "exp": int(time.time()) + 60}, settings
    )
    response.set_cookie(FLASH_COOKIE, value, max_age=60, httponly=True, samesite="lax", path="/")


def take_flash(request: Request, settings: Settings) -> dict[str, Any] | None:
    claims = _signed_cookie(request, settings, FLASH_COOKIE, _FLASH_AUDIENCE)
    if claims is None:
        return None
    return {"message": str(claims.get("m", "")), "kind": str(claims.get("k", "ok"))}
