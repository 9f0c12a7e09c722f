"""Browser sessions end for real: logout, a password change and deactivation end them on the server, so a
copied cookie (and the API token the page was given) is worth nothing afterwards."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, bearer
from labcloud.db.models import BrowserSession
from labcloud.db.types import utcnow
from labcloud.settings import Settings
from labcloud.web import session as web_session


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def browser_login(app: Any, email: str, password: str) -> TestClient:
    """A browser of its own (own cookie jar) logged in through the login form."""
    browser = TestClient(app, base_url="http://testserver")
    page = browser.get("/login")
    r = browser.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return browser


def with_cookie(app: Any, value: str) -> TestClient:
    """Another browser that was given a copy of a session cookie."""
    other = TestClient(app, base_url="http://testserver")
    other.cookies.set(web_session.SESSION_COOKIE, value)
    return other


def logged_in(browser: TestClient) -> bool:
    r = browser.get("/account", follow_redirects=False)
    if r.status_code == 303:
        assert r.headers["location"].startswith("/login")
        return False
    assert r.status_code == 200, r.text
    return True


def db_rows(settings: Settings) -> list[BrowserSession]:
    engine = create_engine(settings.effective_database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(BrowserSession)))
    finally:
        engine.dispose()


def test_logout_ends_the_session_wherever_its_cookie_is(client: TestClient, app: Any) -> None:
    browser = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    copied = browser.cookies[web_session.SESSION_COOKIE]
    thief = with_cookie(app, copied)
    assert logged_in(thief)
    page = browser.get("/account")
    token = browser.post("/ui/token", headers={"X-CSRF-Token": csrf_of(page.text)}).json()["access_token"]
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200

    r = browser.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert not logged_in(browser)
    assert not logged_in(with_cookie(app, copied))
    # the ended session's cookie is dropped rather than renewed
    r = with_cookie(app, copied).get("/", follow_redirects=False)
    assert r.status_code == 303 and f'{web_session.SESSION_COOKIE}=""' in r.headers["set-cookie"]
    # and the token the page was given for its own API calls ends with it
    r = client.get("/api/v1/me", headers=bearer(token))
    assert r.status_code == 401 and "session" in r.json()["detail"]


def test_a_form_cannot_be_sent_with_an_ended_session(client: TestClient, app: Any) -> None:
    browser = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    copied = browser.cookies[web_session.SESSION_COOKIE]
    csrf = csrf_of(browser.get("/account").text)
    browser.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    r = with_cookie(app, copied).post(
        "/account/tokens", data={"name": "after-logout", "scopes": ["read"], "csrf_token": csrf}
    )
    assert "after-logout" not in r.text
    assert client.get("/api/v1/me/tokens", headers=bearer(_login(client))).json()["items"] == []


def _login(client: TestClient) -> str:
    r = client.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    token: str = r.json()["access_token"]
    return token


def test_a_password_change_ends_every_browser_of_the_account(
    client: TestClient, app: Any, user: Account
) -> None:
    here, elsewhere = (
        browser_login(app, user.email, user.password),
        browser_login(app, user.email, user.password),
    )
    page = here.get("/account")
    r = here.post(
        "/account/password",
        data={
            "current_password": user.password,
            "new_password": "a-new-password-9",
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert logged_in(here)  # the browser that changed it carries on with a new session
    assert not logged_in(elsewhere)
    # a change through the API ends them too
    r = client.post(
        "/api/v1/auth/login", data={"username": user.email, "password": "a-new-password-9"}
    ).json()["access_token"]
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": "a-new-password-9", "new_password": "a-newer-password-9"},
        headers=bearer(r),
    )
    assert r.status_code == 204
    assert not logged_in(here)


def test_deactivation_ends_the_accounts_sessions(
    client: TestClient, app: Any, admin: Account, user: Account
) -> None:
    browser = browser_login(app, user.email, user.password)
    assert logged_in(browser)
    r = client.patch(f"/api/v1/users/{user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200
    assert not logged_in(browser)
    client.patch(f"/api/v1/users/{user.id}", json={"is_active": True}, headers=admin.headers)
    assert not logged_in(browser)  # reactivating does not bring old sessions back


def test_only_a_hash_of_the_session_secret_is_stored(
    client: TestClient, app: Any, settings: Settings
) -> None:
    browser = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    claims = jwt.decode(
        browser.cookies[web_session.SESSION_COOKIE],
        settings.signing_key,
        algorithms=["HS256"],
        audience="labcloud-web",
    )
    rows = db_rows(settings)
    assert [r.secret_hash for r in rows] == [hashlib.sha256(claims["sid"].encode()).hexdigest()]


def test_a_session_in_use_is_renewed_and_an_idle_one_expires(
    client: TestClient, app: Any, settings: Settings
) -> None:
    browser = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.begin() as conn:  # most of its lifetime has passed
            conn.execute(update(BrowserSession).values(expires_at=utcnow() + timedelta(minutes=2)))
        r = browser.get("/account")
        assert r.status_code == 200 and web_session.SESSION_COOKIE in r.headers.get("set-cookie", "")
        (row,) = db_rows(settings)
        assert row.expires_at > utcnow() + timedelta(minutes=settings.access_token_minutes - 1)
        with engine.begin() as conn:  # left alone past its expiry
            conn.execute(update(BrowserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert not logged_in(browser)
    finally:
        engine.dispose()
