"""The ends of a user's jobs, for their open pages (GET /api/v1/me/events): only their own, oldest first,
newer than the last one seen, fifty at a time; a page that opens starts from now."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import wait_for_end, write_app
from labcloud.db.engine import Database
from labcloud.db.models import Event
from labcloud.settings import Settings

BEGINNING = str(uuid.UUID(int=0))


def ends(client: TestClient, who: Account, after: str | None = None) -> dict[str, Any]:
    r = client.get("/api/v1/me/events", params={"after": after} if after else {}, headers=who.headers)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def run(client: TestClient, who: Account, app: str) -> dict[str, Any]:
    job: dict[str, Any] = client.post("/api/v1/jobs", json={"app": app}, headers=who.headers).json()
    return wait_for_end(client, job["id"], who.headers)


def test_a_user_hears_of_their_own_job_ends_only_and_from_where_they_were(
    settings: Settings, make_user: Any, request: pytest.FixtureRequest
) -> None:
    write_app(settings.effective_apps_dir, "quick", ["echo", "done"])
    write_app(settings.effective_apps_dir, "fails", ["sh", "-c", "exit 3"])
    client: TestClient = request.getfixturevalue("client")
    alice, bob = make_user(), make_user()
    assert ends(client, alice) == {"items": [], "last_id": None}
    assert client.get("/api/v1/me/events").status_code == 401

    mine = run(client, alice, "fails")
    theirs = run(client, bob, "quick")
    start = ends(client, alice)  # a page that opens now: nothing old, only where to go on from
    assert start["items"] == [] and start["last_id"] is not None
    [event] = ends(client, alice, BEGINNING)["items"]
    assert event["id"] == start["last_id"] and event["type"] == "job.failed"
    assert event["job"]["id"] == mine["id"] and event["job"]["exit_code"] == 3
    assert ends(client, alice, start["last_id"]) == {"items": [], "last_id": start["last_id"]}
    [other] = ends(client, bob, BEGINNING)["items"]
    assert other["job"]["id"] == theirs["id"] and other["type"] == "job.succeeded"

    # oldest first, fifty at a time; another user's events and webhook tests never appear
    db = Database(settings)
    with db.session() as session:
        for n in range(55):
            session.add(Event(kind="job.cancelled", user_id=alice.id, payload={"job": {"id": str(n)}}))
            session.add(Event(kind="job.cancelled", user_id=bob.id, payload={"job": {"id": "bob"}}))
        session.add(Event(kind="webhook.test", user_id=alice.id, payload={"test": True}))
    db.dispose()
    first = ends(client, alice, start["last_id"])
    assert [e["job"]["id"] for e in first["items"]] == [str(n) for n in range(50)]
    assert first["last_id"] == first["items"][-1]["id"]
    rest = ends(client, alice, first["last_id"])
    assert [e["job"]["id"] for e in rest["items"]] == [str(n) for n in range(50, 55)]
    assert ends(client, alice, rest["last_id"])["items"] == []
    assert len(ends(client, bob, other["id"])["items"]) == 50


def test_after_must_be_an_event_id(client: TestClient, user: Account) -> None:
    r = client.get("/api/v1/me/events", params={"after": "yesterday"}, headers=user.headers)
    assert r.status_code == 422
