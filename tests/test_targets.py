"""A job may name the workers it must run on (an instrument, a chosen set): only they can claim it, it
waits for them however many other jobs wait, and its page says for whom it waits."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import write_app
from labcloud.settings import Settings
from test_worker_api import bearer, claim, heartbeat, register

HELLO = {"app": "hello", "params": {"times": 1}}


def _submit(client: TestClient, user: Account, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/jobs", json={**HELLO, **body}, headers=user.headers)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def test_only_the_named_workers_can_claim_a_targeted_job(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    one, two, three = (register(pclient, admin, name) for name in ("rig-1", "rig-2", "rig-3"))
    job = _submit(pclient, user, workers=["rig-2", "rig-3"])
    assert job["workers"] == ["rig-2", "rig-3"] and job["executor"] == "pull"
    assert claim(pclient, one) is None
    got = claim(pclient, three)
    assert got is not None and got["id"] == job["id"]
    assert claim(pclient, two) is None  # taken
    free = _submit(pclient, user)  # names no worker: anyone's
    assert free["workers"] == []
    taken = claim(pclient, one)
    assert taken is not None and taken["id"] == free["id"]


def test_a_workers_own_job_is_found_behind_many_for_others(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    """More jobs wait for another worker than a claim looks at in one go: the named worker still finds its
    own, the oldest first."""
    busy, idle = register(pclient, admin, "busy-rig"), register(pclient, admin, "idle-rig")
    for _ in range(40):
        _submit(pclient, user, workers=["busy-rig"])
    mine = [_submit(pclient, user, workers=["idle-rig"])["id"] for _ in range(2)]
    assert [(claim(pclient, idle) or {}).get("id") for _ in range(2)] == mine
    assert claim(pclient, idle) is None
    assert claim(pclient, busy) is not None


def test_every_bad_worker_name_is_told_at_once(pclient: TestClient, admin: Account, user: Account) -> None:
    token = register(pclient, admin, "gone-rig")
    r = pclient.get("/api/v1/workers", headers=admin.headers)
    [gone] = [w for w in r.json()["items"] if w["name"] == "gone-rig"]
    assert pclient.post(f"/api/v1/workers/{gone['id']}/revoke", headers=admin.headers).is_success
    assert pclient.post("/api/v1/worker/heartbeat", json={}, headers=bearer(token)).status_code == 401
    r = pclient.post(
        "/api/v1/jobs",
        json={**HELLO, "params": {"times": 0}, "workers": ["no-such-rig", "gone-rig"]},
        headers=user.headers,
    )
    assert r.status_code == 422, r.text
    said = {tuple(e["loc"]): e["msg"] for e in r.json()["errors"]}
    assert "no worker named 'no-such-rig'" in said[("body", "workers", 0)]
    assert "revoked" in said[("body", "workers", 1)]
    assert any(loc[:2] == ("body", "params") for loc in said)  # and the rest, in the same answer


def test_an_entrypoint_bound_to_another_executor_cannot_name_workers(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    write_app(settings.effective_apps_dir, "here-only", ["true"], executor="local")
    pclient.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    register(pclient, admin, "rig-x")
    r = pclient.post("/api/v1/jobs", json={"app": "here-only", "workers": ["rig-x"]}, headers=user.headers)
    assert r.status_code == 422, r.text
    assert "'local' executor" in r.text


def test_a_targeted_job_says_for_which_worker_it_waits_and_a_rerun_keeps_it(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "rig-7")
    job = _submit(pclient, user, workers=["rig-7"])
    seen = pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert seen["message"] == "waiting for worker rig-7 (down)"  # registered, never heard from
    heartbeat(pclient, token)
    seen = pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert seen["message"] == "waiting for worker rig-7"
    assert pclient.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers).is_success
    again = pclient.post(f"/api/v1/jobs/{job['id']}/rerun", headers=user.headers)
    assert again.status_code == 201, again.text
    assert again.json()["workers"] == ["rig-7"]
