"""Accounts: admins manage users; users manage themselves."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import Account, login
from labcloud.api.app import create_app
from labcloud.settings import Settings


def test_admin_creates_user_with_generated_password(client: TestClient, admin: Account) -> None:
    r = client.post(
        "/api/v1/users", json={"email": "New.Person@Example.org", "name": "New"}, headers=admin.headers
    )
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == "new.person@example.org"
    assert body["is_admin"] is False and body["is_active"] is True
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    assert login(client, "new.person@example.org", body["initial_password"])


def test_duplicate_email_is_409(client: TestClient, admin: Account, user: Account) -> None:
    r = client.post(
        "/api/v1/users",
        json={"email": user.email.upper(), "password": "another-pass-1"},
        headers=admin.headers,
    )
    assert r.status_code == 409
    assert user.email in r.json()["detail"]


def test_validation_errors_name_the_field(client: TestClient, admin: Account) -> None:
    r = client.post("/api/v1/users", json={"email": "not-an-email", "password": "x"}, headers=admin.headers)
    assert r.status_code == 422
    body = r.json()
    assert body["type"].endswith("validation-error")
    assert ["email"] in [e["loc"] for e in body["errors"]]
    r = client.post(
        "/api/v1/users", json={"email": "ok@example.org", "password": "short"}, headers=admin.headers
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["body", "password"]
    r = client.post("/api/v1/users", json={"email": "ok@example.org", "surprise": 1}, headers=admin.headers)
    assert r.status_code == 422
    assert ["surprise"] in [e["loc"] for e in r.json()["errors"]]


def test_malformed_json_is_422_problem(client: TestClient, admin: Account) -> None:
    r = client.post(
        "/api/v1/users",
        content=b'{"email": "a@example.org",',
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


def test_non_admin_gets_403_on_admin_routes(client: TestClient, user: Account, admin: Account) -> None:
    for method, path, body in [
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"email": "x@example.org"}),
        ("GET", f"/api/v1/users/{admin.id}", None),
        ("PATCH", f"/api/v1/users/{admin.id}", {"is_admin": False}),
    ]:
        r = client.request(method, path, json=body, headers=user.headers)
        assert r.status_code == 403, (method, path)
        assert r.json()["title"] == "Forbidden"


def test_admin_lists_searches_and_pages_users(client: TestClient, admin: Account, make_user: Any) -> None:
    made = [make_user(email=f"member{i}@example.org") for i in range(4)]
    page1 = client.get("/api/v1/users", params={"limit": 3}, headers=admin.headers).json()
    page2 = client.get(
        "/api/v1/users", params={"limit": 3, "cursor": page1["next_cursor"]}, headers=admin.headers
    ).json()
    emails = [u["email"] for u in page1["items"] + page2["items"]]
    assert emails == [admin.email] + [m.email for m in made]
    assert page2["next_cursor"] is None
    found = client.get("/api/v1/users", params={"q": "MEMBER2"}, headers=admin.headers).json()["items"]
    assert [u["email"] for u in found] == ["member2@example.org"]
    assert client.get("/api/v1/users", params={"limit": 1000}, headers=admin.headers).status_code == 422


def test_admin_promotes_a_user(client: TestClient, admin: Account, user: Account) -> None:
    assert client.get("/api/v1/users", headers=user.headers).status_code == 403
    r = client.patch(f"/api/v1/users/{user.id}", json={"is_admin": True}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["is_admin"] is True
    fresh = login(client, user.email, user.password)
    assert client.get("/api/v1/users", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_last_admin_cannot_be_demoted_or_deactivated(client: TestClient, admin: Account) -> None:
    for change in ({"is_admin": False}, {"is_active": False}):
        r = client.patch(f"/api/v1/users/{admin.id}", json=change, headers=admin.headers)
        assert r.status_code == 409
    assert client.get("/api/v1/me", headers=admin.headers).json()["is_admin"] is True


def test_unknown_user_is_404(client: TestClient, admin: Account) -> None:
    r = client.get("/api/v1/users/01900000-0000-7000-8000-000000000000", headers=admin.headers)
    assert r.status_code == 404
    assert client.get("/api/v1/users/not-a-uuid", headers=admin.headers).status_code == 422


def test_user_reads_and_updates_themselves(client: TestClient, user: Account) -> None:
    r = client.patch("/api/v1/me", json={"name": "  Ada Lovelace "}, headers=user.headers)
    assert r.status_code == 200 and r.json()["name"] == "Ada Lovelace"
    assert client.get("/api/v1/me", headers=user.headers).json()["name"] == "Ada Lovelace"
    r = client.patch("/api/v1/me", json={"is_admin": True}, headers=user.headers)
    assert r.status_code == 422
    assert client.get("/api/v1/me", headers=user.headers).json()["is_admin"] is False


def test_signup_is_closed_by_default(client: TestClient) -> None:
    r = client.post("/api/v1/auth/register", json={"email": "me@example.org", "password": "my-password-1"})
    assert r.status_code == 403
    assert "administrator" in r.json()["detail"]


def test_open_signup_creates_a_regular_user(settings: Settings) -> None:
    settings.open_signup = True
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/api/v1/auth/register", json={"email": "me@example.org", "password": "my-password-1"}
        )
        assert r.status_code == 201 and r.json()["is_admin"] is False
        assert login(client, "me@example.org", "my-password-1")
        r = client.post(
            "/api/v1/auth/register", json={"email": "me@example.org", "password": "my-password-1"}
        )
        assert r.status_code == 409
