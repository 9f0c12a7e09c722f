"""Personal API tokens: shown once, hashed at rest, scoped, expiring, revocable."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from conftest import Account, bearer
from labcloud.db.models import ApiToken
from labcloud.settings import Settings


def test_token_secret_is_shown_once_and_stored_only_as_a_hash(
    client: TestClient, settings: Settings, user: Account
) -> None:
    r = client.post("/api/v1/me/tokens", json={"name": "laptop", "scopes": ["read"]}, headers=user.headers)
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    assert secret.startswith("lc_") and len(secret) > 40
    assert created["prefix"] == secret[:10]
    listed = client.get("/api/v1/me/tokens", headers=user.headers).json()["items"]
    assert [t["name"] for t in listed] == ["laptop"]
    assert "token" not in listed[0]
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        stored = conn.execute(select(ApiToken.token_hash)).scalars().all()
    engine.dispose()
    assert stored == [hashlib.sha256(secret.encode()).hexdigest()]


def test_api_token_authenticates_and_records_last_use(client: TestClient, user: Account) -> None:
    secret = client.post("/api/v1/me/tokens", json={"name": "script"}, headers=user.headers).json()["token"]
    me = client.get("/api/v1/me", headers=bearer(secret))
    assert me.status_code == 200 and me.json()["email"] == user.email
    tokens = client.get("/api/v1/me/tokens", headers=user.headers).json()["items"]
    used = datetime.fromisoformat(tokens[0]["last_used_at"])
    assert used.tzinfo is not None
    assert abs((datetime.now(UTC) - used).total_seconds()) < 60


def test_read_scope_cannot_write(client: TestClient, user: Account) -> None:
    secret = client.post(
        "/api/v1/me/tokens", json={"name": "ro", "scopes": ["read"]}, headers=user.headers
    ).json()["token"]
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 200
    r = client.patch("/api/v1/me", json={"name": "x"}, headers=bearer(secret))
    assert r.status_code == 403
    assert "write" in r.json()["detail"]
    r = client.post("/api/v1/me/tokens", json={"name": "escalate"}, headers=bearer(secret))
    assert r.status_code == 403


def test_only_admins_get_the_admin_scope(client: TestClient, admin: Account, user: Account) -> None:
    r = client.post("/api/v1/me/tokens", json={"name": "a", "scopes": ["admin"]}, headers=user.headers)
    assert r.status_code == 403
    no_admin = client.post("/api/v1/me/tokens", json={"name": "rw"}, headers=admin.headers).json()["token"]
    assert client.get("/api/v1/users", headers=bearer(no_admin)).status_code == 403
    with_admin = client.post(
        "/api/v1/me/tokens", json={"name": "adm", "scopes": ["read", "admin"]}, headers=admin.headers
    ).json()["token"]
    assert client.get("/api/v1/users", headers=bearer(with_admin)).status_code == 200


def test_revoked_token_is_refused_and_unlisted(client: TestClient, user: Account, make_user: object) -> None:
    created = client.post("/api/v1/me/tokens", json={"name": "old"}, headers=user.headers).json()
    r = client.delete(f"/api/v1/me/tokens/{created['id']}", headers=user.headers)
    assert r.status_code == 204
    r = client.get("/api/v1/me", headers=bearer(created["token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert client.get("/api/v1/me/tokens", headers=user.headers).json()["items"] == []
    assert client.delete(f"/api/v1/me/tokens/{created['id']}", headers=user.headers).status_code == 404


def test_another_users_token_cannot_be_revoked(client: TestClient, user: Account, make_user: object) -> None:
    other: Account = make_user()  # type: ignore[operator]
    created = client.post("/api/v1/me/tokens", json={"name": "mine"}, headers=user.headers).json()
    r = client.delete(f"/api/v1/me/tokens/{created['id']}", headers=other.headers)
    assert r.status_code == 404
    assert client.get("/api/v1/me", headers=bearer(created["token"])).status_code == 200


def test_expiry_is_validated_and_enforced(client: TestClient, settings: Settings, user: Account) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = client.post("/api/v1/me/tokens", json={"name": "x", "expires_at": past}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "expires_at"]
    too_far = (datetime.now(UTC) + timedelta(days=settings.api_token_max_days + 2)).isoformat()
    r = client.post("/api/v1/me/tokens", json={"name": "x", "expires_at": too_far}, headers=user.headers)
    assert r.status_code == 422
    naive = datetime.now().replace(microsecond=0).isoformat()
    r = client.post("/api/v1/me/tokens", json={"name": "x", "expires_at": naive}, headers=user.headers)
    assert r.status_code == 422
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = client.post(
        "/api/v1/me/tokens", json={"name": "x", "expires_at": soon}, headers=user.headers
    ).json()
    # Let it expire by moving its expiry into the past, as time would.
    engine = create_engine(settings.effective_database_url)
    with Session(engine) as session, session.begin():
        session.execute(
            update(ApiToken)
            .where(ApiToken.name == "x")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    r = client.get("/api/v1/me", headers=bearer(created["token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_token_list_is_paged_with_a_cursor(client: TestClient, user: Account) -> None:
    names = [f"t{i}" for i in range(5)]
    for name in names:
        client.post("/api/v1/me/tokens", json={"name": name}, headers=user.headers)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/me/tokens", params=params, headers=user.headers).json()
        assert len(page["items"]) <= 2
        seen += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(names))  # newest first
    r = client.get("/api/v1/me/tokens", params={"cursor": "!!bad"}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "cursor"]


def test_a_token_never_mints_one_with_more_scopes_than_its_own(client: TestClient, admin: Account) -> None:
    read_write = client.post("/api/v1/me/tokens", json={"name": "rw"}, headers=admin.headers).json()["token"]
    for scopes in (["admin"], ["read", "admin"]):
        r = client.post(
            "/api/v1/me/tokens", json={"name": "escalate", "scopes": scopes}, headers=bearer(read_write)
        )
        assert r.status_code == 403, r.text
        assert "admin" in r.json()["detail"]
    assert [t["name"] for t in client.get("/api/v1/me/tokens", headers=admin.headers).json()["items"]] == [
        "rw"
    ]
    # within its own scopes it may
    r = client.post("/api/v1/me/tokens", json={"name": "ro", "scopes": ["read"]}, headers=bearer(read_write))
    assert r.status_code == 201 and r.json()["scopes"] == ["read"]
    # an admin-scoped token (or a login) may hand the admin scope on
    with_admin = client.post(
        "/api/v1/me/tokens", json={"name": "adm", "scopes": ["read", "write", "admin"]}, headers=admin.headers
    ).json()["token"]
    r = client.post(
        "/api/v1/me/tokens", json={"name": "adm2", "scopes": ["admin"]}, headers=bearer(with_admin)
    )
    assert r.status_code == 201
