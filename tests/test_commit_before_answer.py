"""A write is answered only after it commits.

The request's database session commits when the handler is done; the client must not hear "201 Created"
before that commit. Otherwise a client that uses what it just created (a new API token, a new account) can
be refused by the next request, and a commit that fails is reported as a success. Checked without timing:
the ASGI messages the server sends and the session's commits are recorded in one sequence.

And a commit that fails is an error answer: with the database held locked by another connection (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: an ``EXCLUSIVE`` table lock, which still lets readers through) and a
short lock wait, every write is refused with 503 and Retry-After, and carried out once the lock is gone.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import make_url

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, backend, bearer, login
from jobs_helpers import wait_for_end
from labcloud.api.app import create_app
from labcloud.db.models import ApiToken, User
from labcloud.execution.wakeups import Waker
from labcloud.settings import Settings


class Recorder:
    """An ASGI wrapper noting, in ``order``, when the answer to an HTTP request starts to go out."""

    def __init__(self, app: Any, order: list[str]) -> None:
        self.app, self.order = app, order

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.order.append(f"answered {message['status']}")
            await send(message)

        return await self.app(scope, receive, noting)


@pytest.fixture
def recorded(settings: Settings) -> Iterator[tuple[TestClient, list[str]]]:
    order: list[str] = []
    app = create_app(settings, dispatch=False)
    with TestClient(Recorder(app, order)) as client:
        sessions = app.state.ctx.db.sessions
        event.listen(sessions, "after_commit", lambda _session: order.append("committed"))
        yield client, order


def test_a_write_is_answered_after_its_commit(recorded: tuple[TestClient, list[str]]) -> None:
    client, order = recorded
    admin = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))

    def write(method: str, path: str, **body: Any) -> Any:
        order.clear()
        r = client.request(method, path, headers=admin, **body)
        assert r.status_code in (200, 201, 204), r.text
        assert order == ["committed", f"answered {r.status_code}"], (method, path, order)
        return r.json() if r.content else None

    token = write("POST", "/api/v1/me/tokens", json={"name": "fresh", "scopes": ["read"]})
    write("PATCH", "/api/v1/me", json={"name": "Renamed"})
    write("POST", "/api/v1/users", json={"email": "new@example.org", "password": "a-long-password"})
    write("DELETE", f"/api/v1/me/tokens/{token['id']}")


# -- a commit that cannot happen ------------------------------------------------------------------------

LOCK_WAIT_MS = 300


@pytest.fixture
def short_lock_wait(settings: Settings) -> Settings:
    """Writers give up on a held lock after LOCK_WAIT_MS instead of the default seconds."""
    if backend() == "postgresql":
        settings.database_url += f"?options=-c%20lock_timeout%3D{LOCK_WAIT_MS}"
    else:
        settings.sqlite_busy_timeout_s = LOCK_WAIT_MS / 1000
    return settings


@contextmanager
def database_locked(url: str) -> Iterator[None]:
    """Another connection holds the write lock (readers may still read) until the block ends."""
    if backend() == "postgresql":
        conninfo = make_url(url).set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        with psycopg.connect(conninfo) as conn:
            conn.execute("LOCK TABLE users, api_tokens IN EXCLUSIVE MODE")
            yield
            conn.rollback()
    else:
        conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()


def stored(url: str, model: Any, where: Any) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(model).where(where)).one()
    finally:
        engine.dispose()


def assert_busy(r: Any) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    assert "nothing was changed" in r.json()["detail"]


def test_a_write_that_cannot_commit_is_503_and_is_done_once_it_can(short_lock_wait: Settings) -> None:
    settings = short_lock_wait
    # raise_server_exceptions=False: see what a real client would be told, even if the server broke later
    with TestClient(create_app(settings, dispatch=False), raise_server_exceptions=False) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        created = client.post("/api/v1/me/tokens", json={"name": "to-revoke"}, headers=headers).json()
        url = settings.effective_database_url

        with database_locked(url):
            assert client.get("/api/v1/me", headers=headers).status_code == 200  # reading still works
            assert_busy(client.patch("/api/v1/me", json={"name": "Renamed"}, headers=headers))
            assert_busy(client.delete(f"/api/v1/me/tokens/{created['id']}", headers=headers))

        # nothing claimed success, and nothing happened
        assert client.get("/api/v1/me", headers=headers).json()["name"] != "Renamed"
        assert client.get("/api/v1/me", headers=bearer(created["token"])).status_code == 200

        # once the lock is gone the same writes go through, and are really stored
        r = client.patch("/api/v1/me", json={"name": "Renamed"}, headers=headers)
        assert r.status_code == 200 and r.json()["name"] == "Renamed"
        assert client.delete(f"/api/v1/me/tokens/{created['id']}", headers=headers).status_code == 204
        assert stored(url, User.name, User.email == ADMIN_EMAIL).name == "Renamed"
        assert (
            stored(url, ApiToken.revoked_at, ApiToken.id == uuid.UUID(created["id"])).revoked_at is not None
        )
        assert client.get("/api/v1/me", headers=bearer(created["token"])).status_code == 401


# -- a wake that fails after the commit ------------------------------------------------------------------


class ClosedWaker(Waker):
    """Waking the claims that wait in this process fails, as when the event loop of one has closed."""

    def notify(self) -> None:
        raise RuntimeError("Event loop is closed")


def test_a_stored_job_is_answered_as_stored_when_waking_the_dispatchers_fails(
    client: TestClient, app: Any, user: Account
) -> None:
    """A command commits, then wakes: what it committed is the answer, whatever the wake does; the
    dispatchers find the job on their next round."""
    app.state.ctx.waker = ClosedWaker()
    job = client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers)
    assert job.status_code == 201, job.text
    task = {"executors": [{"image": "labcloud/busybox:1", "command": ["true"]}]}
    created = client.post("/ga4gh/tes/v1/tasks", json=task, headers=user.headers)
    assert created.status_code == 200, created.text
    again = client.post(f"/api/v1/jobs/{job.json()['id']}/rerun", headers=user.headers)
    assert again.status_code == 201, again.text
    listed = client.get("/api/v1/jobs", headers=user.headers).json()["items"]
    assert sorted(j["id"] for j in listed) == sorted(
        [job.json()["id"], created.json()["id"], again.json()["id"]]
    )  # each stored once
    assert wait_for_end(client, again.json()["id"], user.headers)["state"] == "succeeded"
