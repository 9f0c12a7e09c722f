"""Logging in, token kinds, scopes, throttling."""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, backend, bearer, login
from labcloud import security
from labcloud.api.app import create_app
from labcloud.settings import Settings
from live_server import ADMIN_EMAIL as LIVE_ADMIN_EMAIL
from live_server import ADMIN_PASSWORD as LIVE_ADMIN_PASSWORD
from live_server import eventually, serve


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


def test_an_unknown_account_costs_a_password_check_like_a_known_one() -> None:
    """The hash checked for an account that does not exist has the parameters of the hashes made for those
    that do (what a check costs), and no password gets through it. (The module as it is, not as this test
    process made its hashing cheap: see quick_password_hashing.)"""
    spec = importlib.util.find_spec("labcloud.security")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not module._HASHER.check_needs_rehash(module._DUMMY_HASH)
    assert module.verify_password("anything", None) is False
    assert security.verify_password("anything", None) is False  # and with the tests' cheap hashing


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
    settings.login_address_max_failures = 4
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


def test_one_accounts_failures_do_not_lock_out_others_at_the_same_address(
    client: TestClient, make_user: Any
) -> None:
    """A lab behind one NAT or proxy shares an address: one member's typos (or an attacker's guesses at
    one account) slow down that account there, not everyone's logins."""
    victim, colleague = make_user(), make_user()
    for _ in range(10):  # the default limit
        r = client.post("/api/v1/auth/login", data={"username": victim.email, "password": "wrong-guess"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login", data={"username": victim.email, "password": "wrong-guess"})
    assert r.status_code == 429
    assert login(client, colleague.email, colleague.password)


def test_a_throttled_account_gets_in_with_the_right_password_once_the_delay_is_over(
    settings: Settings,
) -> None:
    settings.login_max_failures = 2
    with TestClient(create_app(settings)) as client:
        wrong = {"username": ADMIN_EMAIL, "password": "wrong-password"}
        right = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        assert [client.post("/api/v1/auth/login", data=wrong).status_code for _ in range(2)] == [401, 401]
        r = client.post("/api/v1/auth/login", data=right)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        # a wait, not a lock-out: the right password works once Retry-After has passed
        eventually(
            lambda: client.post("/api/v1/auth/login", data=right).status_code == 200, 10, "the delay to end"
        )
        # and the count starts again
        assert client.post("/api/v1/auth/login", data=wrong).status_code == 401
        # each failure past the limit doubles the wait
        assert client.post("/api/v1/auth/login", data=wrong).status_code == 401
        eventually(lambda: client.post("/api/v1/auth/login", data=wrong).status_code == 401, 10, "1 s")
        r = client.post("/api/v1/auth/login", data=wrong)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"


def test_the_counts_are_shared_by_replicas_of_one_database(settings: Settings) -> None:
    settings.login_max_failures = 3
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        for client in (one, two, one):
            r = client.post(
                "/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": "wrong-password"}
            )
            assert r.status_code == 401
        r = two.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert r.status_code == 429


def test_forwarded_addresses_are_believed_only_from_trusted_proxies(settings: Settings) -> None:
    settings.login_address_max_failures = 3

    def tries(client: TestClient) -> list[int]:
        return [
            client.post(
                "/api/v1/auth/login",
                data={"username": f"nobody{i}@example.org", "password": "wrong-password"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            ).status_code
            for i in range(5)
        ]

    with TestClient(create_app(settings)) as client:  # no proxy configured: the header means nothing
        statuses = tries(client)
        # Three failures from one address, then it is slowed down: the first delay (1 s) may be over by
        # the next try when hashing the password takes that long on a busy machine, the next (2 s) not.
        assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:], statuses
    settings.trusted_proxies = ["testclient"]  # the test client's address
    with TestClient(create_app(settings)) as client:
        assert tries(client) == [401] * 5


# -- against a real server, with its full password-hashing cost


@pytest.fixture
def live_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = {
        "LABCLOUD_HOME": str(settings.home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": LIVE_ADMIN_EMAIL,
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": LIVE_ADMIN_PASSWORD,
        "LABCLOUD_LOG_LEVEL": "warning",
    }
    if backend() == "postgresql":
        env["LABCLOUD_DATABASE_URL"] = database_url
    return env


def burst_of_logins(url: str, tries: list[tuple[dict[str, str], dict[str, str]]]) -> tuple[list[int], float]:
    """Send every (form, headers) login at once, each on a connection opened beforehand; the answers and
    how long the burst took."""
    ready = threading.Barrier(len(tries))

    def send(attempt: tuple[dict[str, str], dict[str, str]]) -> int:
        with httpx.Client(base_url=url, timeout=60) as http:
            http.get("/healthz")  # connected before the burst starts
            ready.wait()
            return http.post("/api/v1/auth/login", data=attempt[0], headers=attempt[1]).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(len(tries)) as pool:
        answers = list(pool.map(send, tries))
    return answers, time.monotonic() - started


def most_tries(limit: int, took: float) -> int:
    """Each try is counted before its password is checked: the limit, then one more each time a doubling
    delay (1 s, 2 s, 4 s ...) has passed during the burst."""
    return limit + 1 + math.floor(math.log2(took + 1))


def test_a_parallel_burst_of_guesses_gets_no_more_tries_than_the_limit(
    live_env: dict[str, str], tmp_path: Path
) -> None:
    with serve({**live_env, "LABCLOUD_LOGIN_MAX_FAILURES": "5"}, tmp_path / "server.log") as url:
        tries = [({"username": LIVE_ADMIN_EMAIL, "password": f"guess-{i}"}, {}) for i in range(40)]
        answers, took = burst_of_logins(url, tries)
    assert set(answers) <= {401, 429}
    assert answers.count(401) <= most_tries(5, took), (answers, took)


def test_x_forwarded_for_from_localhost_does_not_make_a_new_address(
    live_env: dict[str, str], tmp_path: Path
) -> None:
    """No proxy is configured: a header claiming another address per try changes nothing."""
    env = {**live_env, "LABCLOUD_LOGIN_ADDRESS_MAX_FAILURES": "5"}
    with serve(env, tmp_path / "server.log") as url:
        tries = [
            (
                {"username": f"nobody{i}@example.org", "password": "wrong-password"},
                {"X-Forwarded-For": f"203.0.113.{i}"},
            )
            for i in range(30)
        ]
        answers, took = burst_of_logins(url, tries)
    assert set(answers) <= {401, 429}
    assert answers.count(401) <= most_tries(5, took), (answers, took)
