"""Single sign-on, continued: its public endpoints are throttled per client address (a flood is answered 429
before the provider is asked), roles follow the claim (and what was given by hand stays), an administrator
unlinks an identity, and with passwords turned off there is no password to reset or set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from conftest import Account
from labcloud.api.app import create_app
from labcloud.db.models import AuditEvent
from labcloud.services import sso
from labcloud.settings import Settings, SsoProvider
from sso_helpers import CLIENT_ID, CLIENT_SECRET, TokenProvider, answer, start_login, token_provider
from test_sessions import browser_login, csrf_of

FREE = 4  # requests from one address before the next waits


@pytest.fixture
def op() -> Iterator[TokenProvider]:
    sso.forget_cached()
    with token_provider() as provider:
        yield provider


@pytest.fixture
def app(settings: Settings, op: TokenProvider) -> Any:
    settings.login_address_max_failures = FREE
    settings.sso_providers = [
        SsoProvider(
            name="lab",
            discovery_url=op.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            allowed_domains=["lab.example"],
            roles_claim="groups",
            admin_values=["lab-admins"],
            project_roles={"neuro": "neuro-lab:manager", "all": "neuro-lab"},
        )
    ]
    return create_app(settings)


def _events(settings: Settings, action: str) -> list[dict[str, Any]]:
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEvent.details).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
            return [dict(d) for (d,) in rows]
    finally:
        engine.dispose()


def _throttled(r: Any) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1


def _problem(r: Any) -> None:
    _throttled(r)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 429 and "again in" in r.json()["detail"]


def _login(client: TestClient, op: TokenProvider, **claims: Any) -> Any:
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, **claims))
    r = answer(client, started)
    assert r.status_code == 303, r.text
    return r


# ------------------------------------------------------------------------------------------- throttling


def test_logins_that_succeed_are_not_slowed(client: TestClient, op: TokenProvider) -> None:
    for _ in range(3 * FREE):
        _login(client, op)
        client.cookies.clear()


def test_a_flood_of_failed_browser_logins_gets_429_without_asking_the_provider(
    client: TestClient, op: TokenProvider
) -> None:
    started = start_login(client)  # 1
    pending = client.cookies.get("labcloud_sso")
    op.make = lambda: op.sign(op.claims("not-the-nonce"))
    for _ in range(FREE - 1):  # 2, 3: each redeems the code at the provider, and is refused
        client.cookies.set("labcloud_sso", str(pending), path="/login/sso")
        assert answer(client, started).status_code == 401
    asked = len(op.token_requests)
    assert asked == FREE - 1
    client.cookies.set("labcloud_sso", str(pending), path="/login/sso")
    _throttled(answer(client, started))
    _throttled(client.get("/login/sso/lab", follow_redirects=False))
    assert len(op.token_requests) == asked  # refused before the provider was asked


def test_the_device_login_is_throttled_and_polled_at_its_pace(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    op.device = True
    started = client.post("/api/v1/auth/sso/lab/device")
    assert started.status_code == 200 and started.json()["interval"] == 5, started.text
    handle = started.json()["handle"]
    poll = {"handle": handle}
    assert client.post("/api/v1/auth/sso/device/token", json=poll).status_code == 202
    assert len(op.token_requests) == 1
    # Faster than its interval: refused at once, the provider not asked.
    _problem(client.post("/api/v1/auth/sso/device/token", json=poll))
    assert len(op.token_requests) == 1
    time.sleep(1.2)
    op.device_pending = False
    op.make = lambda: op.sign(op.claims(None))
    done = client.post("/api/v1/auth/sso/device/token", json=poll)
    assert done.status_code == 200 and done.json()["access_token"], done.text
    # The poll that came too fast was a failure of the address; so are forged handles: after FREE the
    # address waits, and so does a new start.
    for _ in range(FREE - 1):
        assert client.post("/api/v1/auth/sso/device/token", json={"handle": "forged"}).status_code == 410
    _problem(client.post("/api/v1/auth/sso/device/token", json={"handle": "forged"}))
    starts = op.device_requests
    _problem(client.post("/api/v1/auth/sso/lab/device"))
    assert op.device_requests == starts


def test_guessing_loopback_codes_gets_429(client: TestClient) -> None:
    wrong = {"code": "guessed", "verifier": "v" * 50}
    for _ in range(FREE):
        assert client.post("/api/v1/auth/sso/cli-token", json=wrong).status_code == 401
    _problem(client.post("/api/v1/auth/sso/cli-token", json=wrong))


# ---------------------------------------------------------------------------------------- roles follow


def _roles(client: TestClient, admin: Account) -> dict[str, str]:
    members = client.get("/api/v1/projects/neuro-lab", headers=admin.headers).json()["members"]
    return {m["email"]: m["role"] for m in members}


def _is_admin(client: TestClient, admin: Account, email: str) -> bool:
    found = client.get("/api/v1/users", params={"q": email}, headers=admin.headers).json()["items"]
    return bool(next(u for u in found if u["email"] == email)["is_admin"])


def _ada_id(client: TestClient, admin: Account) -> str:
    found = client.get("/api/v1/users", params={"q": "ada@lab.example"}, headers=admin.headers).json()
    return str(found["items"][0]["id"])


@pytest.fixture
def neuro(client: TestClient, admin: Account) -> None:
    r = client.post("/api/v1/projects", json={"name": "Neuro", "slug": "neuro-lab"}, headers=admin.headers)
    assert r.status_code == 201, r.text


def test_roles_follow_the_claim(
    client: TestClient, op: TokenProvider, admin: Account, settings: Settings, neuro: None
) -> None:
    _login(client, op, groups=["neuro", "lab-admins"])
    assert (
        _is_admin(client, admin, "ada@lab.example") and _roles(client, admin)["ada@lab.example"] == "manager"
    )
    client.cookies.clear()
    _login(client, op, groups=["all"])  # manager → member, no longer an administrator
    assert not _is_admin(client, admin, "ada@lab.example")
    assert _roles(client, admin)["ada@lab.example"] == "member"
    client.cookies.clear()
    _login(client, op, groups=[])
    assert "ada@lab.example" not in _roles(client, admin)
    changes = [e for e in _events(settings, "project.role_changed") if e.get("sso")]
    assert [(e["from"], e["to"]) for e in changes] == [
        (None, "manager"),
        ("manager", "member"),
        ("member", None),
    ]
    admins = [e["admin"] for e in _events(settings, "user.role_changed") if e.get("sso")]
    assert admins == [True, False]


def test_roles_given_by_hand_are_never_taken_by_a_login(
    client: TestClient, op: TokenProvider, admin: Account, neuro: None
) -> None:
    _login(client, op, groups=[])
    ada = _ada_id(client, admin)
    r = client.post(
        "/api/v1/projects/neuro-lab/members",
        json={"email": "ada@lab.example", "role": "viewer"},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert client.patch(f"/api/v1/users/{ada}", json={"is_admin": True}, headers=admin.headers).is_success
    client.cookies.clear()
    _login(client, op, groups=["neuro"])  # raised by the claim ...
    assert _roles(client, admin)["ada@lab.example"] == "manager"
    client.cookies.clear()
    _login(client, op, groups=[])  # ... and back to what was given by hand
    assert _roles(client, admin)["ada@lab.example"] == "viewer"
    assert _is_admin(client, admin, "ada@lab.example")
    # A role the claim gave and an owner changed since is the owner's: the claim going away leaves it.
    client.cookies.clear()
    _login(client, op, groups=["all", "lab-admins"])
    r = client.patch(
        f"/api/v1/projects/neuro-lab/members/{ada}", json={"role": "owner"}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    client.cookies.clear()
    _login(client, op, groups=[])
    assert _roles(client, admin)["ada@lab.example"] == "owner"
    assert _is_admin(client, admin, "ada@lab.example")  # (an administrator by hand before the claim said so)
    # Granted by the claim, then taken and given again by hand: the administrator's now, not the claim's.
    assert client.patch(f"/api/v1/users/{ada}", json={"is_admin": False}, headers=admin.headers).is_success
    client.cookies.clear()
    _login(client, op, groups=["lab-admins"])
    assert client.patch(f"/api/v1/users/{ada}", json={"is_admin": False}, headers=admin.headers).is_success
    assert client.patch(f"/api/v1/users/{ada}", json={"is_admin": True}, headers=admin.headers).is_success
    client.cookies.clear()
    _login(client, op, groups=[])
    assert _is_admin(client, admin, "ada@lab.example")


# ------------------------------------------------------------------------------------------------ unlink


def test_an_admin_unlinks_an_identity(
    app: Any, client: TestClient, op: TokenProvider, admin: Account, settings: Settings
) -> None:
    _login(client, op)
    ada = _ada_id(client, admin)
    (identity,) = client.get(f"/api/v1/users/{ada}/sso-identities", headers=admin.headers).json()
    assert identity["provider"] == "lab" and identity["email"] == "ada@lab.example"
    r = client.delete(f"/api/v1/users/{ada}/sso-identities/{identity['id']}", headers=admin.headers)
    assert r.status_code == 204
    assert client.get(f"/api/v1/users/{ada}/sso-identities", headers=admin.headers).json() == []
    assert _events(settings, "sso.unlinked")[-1]["provider"] == "lab"
    # Its logins no longer reach the account by the subject alone: an unverified e-mail is refused ...
    client.cookies.clear()
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, email_verified=False))
    assert answer(client, started).status_code == 403
    # ... and a verified one links it again, by the rules of a first login.
    _login(client, op)
    assert len(client.get(f"/api/v1/users/{ada}/sso-identities", headers=admin.headers).json()) == 1
    # The account's admin page unlinks too.
    browser = browser_login(app, admin.email, admin.password)
    page = browser.get(f"/admin/users/{ada}")
    assert "/unlink" in page.text, page.text
    (linked,) = client.get(f"/api/v1/users/{ada}/sso-identities", headers=admin.headers).json()
    r = browser.post(
        f"/admin/users/{ada}/sso-identities/{linked['id']}/unlink",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert client.get(f"/api/v1/users/{ada}/sso-identities", headers=admin.headers).json() == []
    assert len(_events(settings, "sso.unlinked")) == 2


# -------------------------------------------------------------------------------------- passwords off


def test_without_passwords_there_is_none_to_reset_or_set(settings: Settings, op: TokenProvider) -> None:
    settings.password_login = False
    settings.smtp_url = "smtp://127.0.0.1:1"
    with TestClient(create_app(settings)) as client:
        for path, body in (
            ("/api/v1/auth/password-reset", {"email": "ada@lab.example"}),
            ("/api/v1/auth/password-reset/confirm", {"token": "t", "password": "a-new-password-1"}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 403 and "signs in through single sign-on" in r.json()["detail"], r.text
        for page in ("/login/forgot", "/login/set-password?token=t"):
            r = client.get(page)
            assert r.status_code == 403 and "signs in through single sign-on" in r.text
        r = client.post("/login/forgot", data={"email": "ada@lab.example", "csrf_token": "x"})
        assert r.status_code == 403 and "signs in through single sign-on" in r.text
    settings.password_login = True  # with passwords, the same pages work
    with TestClient(create_app(settings)) as client:
        assert client.get("/login/forgot").status_code == 200


def test_an_admin_gets_back_in_from_the_shell_without_passwords(
    settings: Settings, op: TokenProvider
) -> None:
    """Single sign-on broken and passwords off: ``labcloud admin token`` prints an administrator's API
    token, which the API takes (API tokens keep working)."""
    settings.password_login = False
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}
    env.update(LABCLOUD_HOME=str(settings.home), LABCLOUD_DATABASE_URL=settings.effective_database_url)
    env["LABCLOUD_PASSWORD_LOGIN"] = "false"
    with TestClient(create_app(settings)) as client:  # (the first administrator is made)
        cli = [sys.executable, "-m", "labcloud.cli", "admin", "token"]
        done = subprocess.run(
            [*cli, "root@example.org"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        secret = done.stdout.strip().splitlines()[-1]
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
        assert me["email"] == "root@example.org" and me["is_admin"] is True
        nobody = subprocess.run(
            [*cli, "nobody@example.org"], env=env, capture_output=True, text=True, timeout=120
        )
        assert nobody.returncode == 1 and "no active administrator" in nobody.stderr
