"""Hostile requests: what a caller sends is never trusted beyond what it was given."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import Account, bearer
from jobs_helpers import write_app
from labcloud.settings import Settings

FREE = {"cpus": 4, "memory_mb": 8192, "gpus": 0}


def register_worker(client: TestClient, admin: Account, name: str, **labels: str) -> str:
    r = client.post("/api/v1/workers", json={"name": name, "labels": labels}, headers=admin.headers)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def claim(client: TestClient, token: str, **extra: Any) -> dict[str, Any] | None:
    r = client.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": 0, **extra}, headers=bearer(token))
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()["job"]
    return job


# ---------------------------------------------------------------------------------------- worker labels


def test_a_worker_claims_only_with_the_labels_it_was_registered_with(
    settings: Settings, client: TestClient, admin: Account, user: Account
) -> None:
    write_app(settings.effective_apps_dir, "board", ["true"], labels={"platform": "spinnaker"})
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    impostor = register_worker(client, admin, "impostor")
    r = client.post("/api/v1/jobs", json={"app": "board", "params": {}}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert claim(client, impostor, labels={"platform": "spinnaker"}) is None
    assert client.get(f"/api/v1/jobs/{r.json()['id']}", headers=user.headers).json()["state"] == "queued"
    board = register_worker(client, admin, "board", platform="spinnaker")
    got = claim(client, board)
    assert got is not None and got["id"] == r.json()["id"]
