"""A write is answered only after it commits.

The request's database session commits when the handler is done; the client must not hear "201 Created"
before that commit. Otherwise a client that uses what it just created (a new API token, a new account) can
be refused by the next request, and a commit that fails is reported as a success. Checked without timing:
the ASGI messages the server sends and the session's commits are recorded in one sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, login
from labcloud.api.app import create_app
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
