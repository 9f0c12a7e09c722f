"""The browser's session: a signed cookie around a login token from the token service, and CSRF tokens.

The cookie holds a login token (the same kind ``POST /api/v1/auth/login`` gives out), so who may log in,
for how long, and when a session ends (password change, deactivation) are decided by the token service
alone. The cookie is renewed once the token is half-way to expiry, so an open page stays logged in. Next
to the token it carries a random CSRF secret that every form sends back.

Before login there is no session, so the login form uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request, Response

from labcloud import security
from labcloud.db.models import User
from labcloud.services import tokens
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
    token: str  # a login token: what the token service authenticates
    csrf: str
    expires_at: float
    lifetime_s: int

    def due_for_renewal(self, now: float | None = None) -> bool:
        return (now or time.time()) > self.expires_at - self.lifetime_s / 2


def start(user: User, settings: Settings, csrf: str | None = None) -> BrowserSession:
    """A fresh session for ``user``; keeps ``csrf`` when renewing so that open forms stay valid."""
    token, lifetime = tokens.login_token(user, settings)
    return BrowserSession(token, csrf or secrets.token_urlsafe(32), time.time() + lifetime, lifetime)


def read(request: Request, settings: Settings) -> BrowserSession | None:
    """The session in the request's cookie if its signature holds and it has not expired."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        claims = jwt.decode(
            raw, settings.signing_key, algorithms=[security.JWT_ALGORITHM], audience=_AUDIENCE
        )
        return BrowserSession(claims["tok"], claims["csrf"], float(claims["exp"]), int(claims["life"]))
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


def secure_cookies(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.base_url.startswith("https://")


def store(response: Response, request: Request, settings: Settings, session: BrowserSession) -> None:
    claims = {
        "tok": session.token,
        "csrf": session.csrf,
        "exp": int(session.expires_at),
        "life": session.lifetime_s,
        "aud": _AUDIENCE,
    }
    value = jwt.encode(claims, settings.signing_key, algorithm=security.JWT_ALGORITHM)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=session.lifetime_s,
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
    value = jwt.encode(
        {"m": message[:500], "k": kind, "aud": _FLASH_AUDIENCE, "exp": int(time.time()) + 60},
        settings.signing_key,
        algorithm=security.JWT_ALGORITHM,
    )
    response.set_cookie(FLASH_COOKIE, value, max_age=60, httponly=True, samesite="lax", path="/")


def take_flash(request: Request, settings: Settings) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        claims = jwt.decode(
            raw, settings.signing_key, algorithms=[security.JWT_ALGORITHM], audience=_FLASH_AUDIENCE
        )
    except jwt.PyJWTError:
        return None
    return {"message": str(claims.get("m", "")), "kind": str(claims.get("k", "ok"))}
