"""Logging in, token kinds, scopes, throttling."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, bearer, login
from labcloud.api.app import create_app
from labcloud.settings import Settings


def test_login_returns_a_token_that_identifies_the_user(client: TestClient, user: Account) -> None:
    r = client.post("/api/v1/auth/login", data={"username": user.email.upper(), "password": user.password})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 30 * 60
    me = client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["email"] == user.email
    assert me.json()["last_login_at"] is not None


def test_unknown_user_and_wrong_password_get_the_same_answer(client: TestClient, user: Account) -> None:
    wrong = client.post("/api/v1/auth/login", data={"username": user.email, "password": "not-the-password"})
    unknown = client.post(
        "/api/v1/auth/login", data={"username": "nobody@example.org", "password": "whatever1"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_deactivated_user_cannot_log_in_and_loses_existing_tokens(
    client: TestClient, admin: Account, user: Account
) -> None:
    api_token = client.post("/api/v1/me/tokens", json={"name": "t"}, headers=user.headers).json()["token"]
    r = client.patch(f"/api/v1/users/{user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["is_active"] is False
    r = client.post("/api/v1/auth/login", data={"username": user.email, "password": user.password})
    assert r.status_code == 401
    assert client.get("/api/v1/me", headers=user.headers).status_code == 401
    assert client.get("/api/v1/me", headers=bearer(api_token)).status_code == 401


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer garbage", "Bearer lc_not-a-real-token", "Basic dXNlcjpwYXNz"],
)
def test_missing_or_invalid_credentials_are_401_with_challenge(
    client: TestClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["detail"]


def test_expired_login_token_is_refused(client: TestClient, settings: Settings, user: Account) -> None:
    claims = jwt.decode(user.token, settings.signing_key, algorithms=["HS256"], audience="labcloud")
    claims["exp"] = datetime.now(UTC) - timedelta(seconds=1)
    expired = jwt.encode(claims, settings.signing_key, algorithm="HS256")
    r = client.get("/api/v1/me", headers=bearer(expired))
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_token_signed_with_another_key_is_refused(
    client: TestClient, settings: Settings, user: Account
) -> None:
    claims = jwt.decode(user.token, settings.signing_key, algorithms=["HS256"], audience="labcloud")
    forged = jwt.encode(
        {**claims, "scopes": ["read", "write", "admin"]},
        "another-key-that-is-long-enough-for-hs256",
        algorithm="HS256",
    )
    assert client.get("/api/v1/me", headers=bearer(forged)).status_code == 401


def test_password_change_ends_earlier_login_tokens(client: TestClient, user: Account) -> None:
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": user.password, "new_password": "a-new-password-2"},
        headers=user.headers,
    )
    assert r.status_code == 204
    assert client.get("/api/v1/me", headers=user.headers).status_code == 401
    assert login(client, user.email, "a-new-password-2")
    r = client.post("/api/v1/auth/login", data={"username": user.email, "password": user.password})
    assert r.status_code == 401


def test_password_change_checks_current_password_and_length(client: TestClient, user: Account) -> None:
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": "wrong-password", "new_password": "a-new-password-2"},
        headers=user.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "current_password"]
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": user.password, "new_password": "short"},
        headers=user.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "new_password"]


def test_failed_logins_are_throttled_per_account(settings: Settings) -> None:
    settings.login_max_failures = 3
    settings.login_window_seconds = 120
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            r = client.post(
                "/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": "wrong-password"}
            )
            assert r.status_code == 401
        r = client.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 120
        assert r.json()["status"] == 429


def test_failed_logins_are_throttled_per_address(settings: Settings) -> None:
    settings.login_max_failures = 4
    with TestClient(create_app(settings)) as client:
        for i in range(4):
            r = client.post(
                "/api/v1/auth/login", data={"username": f"u{i}@example.org", "password": "wrong-pass"}
            )
            assert r.status_code == 401
        r = client.post(
            "/api/v1/auth/login", data={"username": "fresh@example.org", "password": "wrong-pass"}
        )
        assert r.status_code == 429


def test_secrets_never_reach_the_log(
    client: TestClient, user: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/api/v1/auth/login", data={"username": user.email, "password": user.password})
    secret = client.post("/api/v1/me/tokens", json={"name": "ci"}, headers=user.headers).json()["token"]
    client.get("/api/v1/me", headers=bearer(secret))
    client.post(
        "/api/v1/me/password",
        json={"current_password": user.password, "new_password": "a-new-password-3"},
        headers=user.headers,
    )
    text = caplog.text
    for leaked in (user.password, "a-new-password-3", secret, user.token):
        assert leaked not in text
