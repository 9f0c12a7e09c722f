"""Single sign-on's checks and account rules, against a provider whose ID tokens the test signs itself: a
good login logs in; a wrong issuer, audience, signature, nonce or state, an expired or replayed token, an
unverified e-mail reaching for an existing account, or a domain that is not allowed, log nobody in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select

from conftest import Account, bearer
from labcloud.api.app import create_app
from labcloud.db.models import AuditEvent, SsoUsedToken, User
from labcloud.services import sso
from labcloud.settings import Settings, SsoProvider
from sso_helpers import CLIENT_ID, CLIENT_SECRET, TokenProvider, answer, new_key, start_login, token_provider


@pytest.fixture
def op() -> Iterator[TokenProvider]:
    sso.forget_cached()
    with token_provider() as provider:
        yield provider


@pytest.fixture
def app(settings: Settings, op: TokenProvider) -> Any:
    settings.sso_providers = [
        SsoProvider(
            name="lab",
            label="Lab login",
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


def _reasons(settings: Settings) -> list[str]:
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(AuditEvent.details).where(AuditEvent.action == "login.failed"))
            return [str(d.get("reason")) for (d,) in rows if d.get("sso")]
    finally:
        engine.dispose()


def _user(settings: Settings, email: str) -> User | None:
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(User.id, User.is_admin).where(User.email == email)).first()
            return None if row is None else User(id=row.id, is_admin=row.is_admin, email=email)
    finally:
        engine.dispose()


def _logged_in_page(client: TestClient) -> str:
    r = client.get("/account")
    assert r.status_code == 200 and "/login" not in str(r.url), r.url
    return r.text


def test_the_login_page_has_a_button_for_each_provider(client: TestClient) -> None:
    page = client.get("/login").text
    assert 'href="/login/sso/lab?next=/"' in page and "Lab login" in page
    assert 'id="password-form"' in page


def test_a_first_login_in_an_allowed_domain_makes_the_account(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    started = start_login(client)
    assert started.query["code_challenge_method"] == "S256" and started.query["client_id"] == CLIENT_ID
    assert started.redirect_uri == "http://127.0.0.1:8000/login/sso/lab/callback"
    assert "openid" in started.query["scope"].split()
    op.make = lambda: op.sign(op.claims(started.nonce))
    r = answer(client, started)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    # The code was redeemed with the PKCE verifier of the challenge, the client authenticated.
    (request,) = op.token_requests
    assert sso.pkce_challenge(request["code_verifier"]) == started.challenge
    assert request["authorization"].startswith("Basic ") and request["code"] == "a-code"
    assert "ada@lab.example" in _logged_in_page(client)
    user = _user(settings, "ada@lab.example")
    assert user is not None and not user.is_admin
    # The pending login is used up: its answer cannot be played again.
    again = answer(client, started)
    assert again.status_code == 401 and "expired or did not start here" in again.text


def _refused(client: TestClient, op: TokenProvider, settings: Settings, status: int, reason: str) -> None:
    started = start_login(client)
    r = answer(client, started)
    assert r.status_code == status, r.text
    assert "labcloud_session" not in r.headers.get("set-cookie", "")
    assert client.get("/account", follow_redirects=False).status_code in (302, 303, 401)
    assert _reasons(settings)[-1] == reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "http://127.0.0.1:1/another-issuer"}, "id_token_issuer"),
        ({"aud": "another-client"}, "id_token_audience"),
        ({"aud": [CLIENT_ID, "another-client"]}, "id_token_audience"),  # several, and no azp naming us
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "id_token_expired"),
        ({"nonce": "not-the-nonce"}, "id_token_nonce"),
        ({"nonce": None}, "id_token_nonce"),
    ],
    ids=["issuer", "audience", "audiences", "expired", "nonce", "no-nonce"],
)
def test_bad_id_tokens_are_refused(
    client: TestClient, op: TokenProvider, settings: Settings, changes: dict[str, Any], reason: str
) -> None:
    nonce: list[str] = []
    op.make = lambda: op.sign(op.claims(nonce[-1], **changes))
    started = start_login(client)
    nonce.append(started.nonce)
    r = answer(client, started)
    assert r.status_code == 401, r.text
    assert "labcloud_session" not in r.headers.get("set-cookie", "")
    assert _reasons(settings)[-1] == reason
    assert _user(settings, "ada@lab.example") is None


def test_a_token_signed_by_another_key_is_refused(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    impostor = new_key()
    impostor_same_kid = type(impostor).generate_key(2048, parameters={"kid": op.keys[0].kid})
    for (key,) in [(impostor,), (impostor_same_kid,)]:
        started = start_login(client)
        op.make = lambda k=key, n=started.nonce: op.sign(op.claims(n), k)
        r = answer(client, started)
        assert r.status_code == 401, r.text
        assert _reasons(settings)[-1] == "id_token_signature"


def test_a_replayed_id_token_is_refused(client: TestClient, op: TokenProvider, settings: Settings) -> None:
    """The provider's answer played again (the pending login's cookie put back, the same ID token sent):
    the token was used already."""
    started = start_login(client)
    pending_cookie = client.cookies.get("labcloud_sso")
    assert pending_cookie
    token = op.sign(op.claims(started.nonce))
    op.make = lambda: token
    assert answer(client, started).status_code == 303
    client.cookies.clear()
    client.cookies.set("labcloud_sso", pending_cookie, path="/login/sso")
    r = answer(client, started)
    assert r.status_code == 401 and _reasons(settings)[-1] == "id_token_replayed"
    assert "labcloud_session" not in r.headers.get("set-cookie", "")
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        used = conn.execute(select(SsoUsedToken.digest)).scalars().all()
    engine.dispose()
    assert sso.digest(token) in used


def test_a_wrong_or_missing_state_is_refused(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce))
    r = answer(client, started, state="forged-state")
    assert r.status_code == 401 and _reasons(settings)[-1] == "state_mismatch"
    assert op.token_requests == []  # the code was never redeemed
    client.cookies.clear()
    r = answer(client, started)
    assert r.status_code == 401 and _reasons(settings)[-1] == "state_missing"


def test_an_unverified_email_does_not_reach_an_existing_account(
    client: TestClient, op: TokenProvider, settings: Settings, make_user: Any
) -> None:
    existing: Account = make_user("grace@example.org")
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, email="grace@example.org", email_verified=False))
    r = answer(client, started)
    assert r.status_code == 403 and _reasons(settings)[-1] == "unverified_email"
    # Verified, it links to that account (never a second one), and from then on the subject is enough.
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, email="grace@example.org", sub="grace-sub"))
    assert answer(client, started).status_code == 303
    me = client.get("/api/v1/me", headers=bearer(existing.token)).json()
    assert "grace@example.org" in _logged_in_page(client) and me["email"] == "grace@example.org"
    client.cookies.clear()
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, sub="grace-sub", email=None, email_verified=None))
    assert answer(client, started).status_code == 303
    assert "grace@example.org" in _logged_in_page(client)


def test_a_domain_that_is_not_allowed_gets_no_account(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, email="eve@elsewhere.example"))
    r = answer(client, started)
    assert r.status_code == 403 and _reasons(settings)[-1] == "not_allowed"
    assert _user(settings, "eve@elsewhere.example") is None
    started = start_login(client)  # nor an unverified e-mail in an allowed one
    op.make = lambda: op.sign(op.claims(started.nonce, email="mallory@lab.example", email_verified=False))
    assert answer(client, started).status_code == 403
    assert _user(settings, "mallory@lab.example") is None


def test_rotated_keys_are_read_again(client: TestClient, op: TokenProvider, settings: Settings) -> None:
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce))
    assert answer(client, started).status_code == 303
    op.keys = [new_key()]  # the provider rotates: the cached keys do not know the new one
    client.cookies.clear()
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce))
    assert answer(client, started).status_code == 303


def test_claims_make_admins_and_project_members(
    client: TestClient, op: TokenProvider, settings: Settings, admin: Account
) -> None:
    r = client.post(
        "/api/v1/projects", json={"name": "Neuro lab", "slug": "neuro-lab"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    started = start_login(client)
    op.make = lambda: op.sign(op.claims(started.nonce, groups=["neuro", "lab-admins"]))
    assert answer(client, started).status_code == 303
    user = _user(settings, "ada@lab.example")
    assert user is not None and user.is_admin
    members = client.get("/api/v1/projects/neuro-lab", headers=admin.headers).json()["members"]
    roles = {m["email"]: m["role"] for m in members}
    assert roles["ada@lab.example"] == "manager"
    # Her browser session is an administrator's now; the account's page shows where she logs in from.
    page = client.get(f"/admin/users/{user.id}")
    assert (
        page.status_code == 200 and 'id="sso-identities"' in page.text and "lab: ada@lab.example" in page.text
    )


def test_passwords_can_be_turned_off(settings: Settings, op: TokenProvider, admin: Account) -> None:
    settings.password_login = False
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/v1/auth/login", data={"username": admin.email, "password": admin.password})
        assert r.status_code == 403 and "single sign-on" in r.json()["detail"]
        page = client.get("/login").text
        assert 'id="password-form"' not in page and "/login/sso/lab" in page
        # API tokens keep working.
        assert client.get("/api/v1/me", headers=admin.headers).status_code == 200


def test_some_domains_must_use_single_sign_on(
    client: TestClient, settings: Settings, make_user: Any, admin: Account
) -> None:
    make_user("bob@lab.example", password="bob-password-1")
    settings.sso_required_domains = ["lab.example"]
    r = client.post("/api/v1/auth/login", data={"username": "bob@lab.example", "password": "bob-password-1"})
    assert r.status_code == 403
    assert client.post(
        "/api/v1/auth/login", data={"username": admin.email, "password": admin.password}
    ).is_success


def test_the_loopback_login_gives_the_command_line_a_one_time_code(
    client: TestClient, op: TokenProvider, settings: Settings
) -> None:
    verifier = "v" * 50
    started = start_login(client, params=f"?cli=45678&challenge={sso.pkce_challenge(verifier)}")
    op.make = lambda: op.sign(op.claims(started.nonce))
    r = answer(client, started)
    assert r.status_code == 303 and r.headers["location"].startswith("http://127.0.0.1:45678/?code=")
    assert "labcloud_session" not in r.headers.get("set-cookie", "")  # the browser is not logged in
    code = r.headers["location"].split("code=", 1)[1]
    wrong = client.post("/api/v1/auth/sso/cli-token", json={"code": code, "verifier": "w" * 50})
    assert wrong.status_code == 401
    ok = client.post("/api/v1/auth/sso/cli-token", json={"code": code, "verifier": verifier})
    assert ok.status_code == 200, ok.text
    assert (
        client.get("/api/v1/me", headers=bearer(ok.json()["access_token"])).json()["email"]
        == "ada@lab.example"
    )
    again = client.post("/api/v1/auth/sso/cli-token", json={"code": code, "verifier": verifier})
    assert again.status_code == 401


def test_used_tokens_are_forgotten_once_expired(settings: Settings) -> None:
    # No server here: its housekeeping's first round, at its start, could forget the expired token first.
    engine = create_engine(settings.effective_database_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(SsoUsedToken),
                [
                    {"digest": "a" * 64, "expires_at": now - timedelta(minutes=1)},
                    {"digest": "b" * 64, "expires_at": now + timedelta(minutes=5)},
                ],
            )
        assert sso.forget_used(engine) == 1
        with engine.connect() as conn:
            assert conn.execute(select(SsoUsedToken.digest)).scalars().all() == ["b" * 64]
    finally:
        engine.dispose()


def test_providers_come_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "labcloud.toml"
    config.write_text(
        'password_login = false\n\n[[sso_providers]]\nname = "lab"\ndiscovery_url = "https://id.lab.example"\n'
        'client_id = "labcloud"\nproject_roles = { "neuro" = "neuro-lab:manager" }\n'
    )
    monkeypatch.setenv("LABCLOUD_CONFIG", str(config))
    from_file = Settings(home=tmp_path)
    (provider,) = from_file.sso_providers
    assert not from_file.password_login and provider.project_roles == {"neuro": "neuro-lab:manager"}
    assert provider.metadata_url == "https://id.lab.example/.well-known/openid-configuration"
    monkeypatch.setenv(
        "LABCLOUD_SSO_PROVIDERS", '[{"name": "a", "discovery_url": "https://a", "client_id": "c"}]'
    )
    assert [p.name for p in Settings(home=tmp_path).sso_providers] == ["a"]
    for wrong in (
        '[{"name": "a", "discovery_url": "https://a", "client_id": "c"}, '
        '{"name": "a", "discovery_url": "https://b", "client_id": "c"}]',
        '[{"name": "Not A Name", "discovery_url": "https://a", "client_id": "c"}]',
        '[{"name": "a", "discovery_url": "https://a", "client_id": "c", "project_roles": {"x": "p:boss"}}]',
    ):
        monkeypatch.setenv("LABCLOUD_SSO_PROVIDERS", wrong)
        with pytest.raises(ValueError):
            Settings(home=tmp_path)


def test_the_device_login_needs_a_provider_that_offers_it(client: TestClient, settings: Settings) -> None:
    r = client.post("/api/v1/auth/sso/lab/device")
    assert r.status_code == 409 and "no device login" in r.json()["detail"]
    assert _reasons(settings)[-1] == "no_device_flow"
    assert client.post("/api/v1/auth/sso/nobody/device").status_code == 404
    r = client.post("/api/v1/auth/sso/device/token", json={"handle": "forged"})
    assert r.status_code == 410
    providers = client.get("/api/v1/auth/sso/providers").json()
    assert providers == [{"name": "lab", "label": "Lab login"}]
