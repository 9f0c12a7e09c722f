"""The worker protocol, spoken by hand: claims, leases, fencing, revocation (no worker process here)."""

from __future__ import annotations

import base64
import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from conftest import Account
from jobs_helpers import write_app
from labcloud.api.app import create_app
from labcloud.db.engine import Database
from labcloud.db.models import Job, Worker
from labcloud.services import claims, handover
from labcloud.settings import Settings

FREE = {"cpus": 4, "memory_mb": 8192, "gpus": 0}


def register(client: TestClient, admin: Account, name: str, **labels: str) -> str:
    r = client.post("/api/v1/workers", json={"name": name, "labels": labels}, headers=admin.headers)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    assert token.startswith("lcw_")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claim(client: TestClient, token: str, **extra: Any) -> dict[str, Any] | None:
    body = {"free": FREE, "wait_s": 0, **extra}
    r = client.post("/api/v1/worker/claim", json=body, headers=bearer(token))
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()["job"]
    return job


def submit(client: TestClient, user: Account, **body: Any) -> dict[str, Any]:
    r = client.post(
        "/api/v1/jobs", json={"app": "hello", "params": {"times": 1}, **body}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def test_a_job_through_the_protocol(pclient: TestClient, admin: Account, user: Account) -> None:
    token = register(pclient, admin, "rig-1")
    job = submit(pclient, user)
    assert job["message"] == "waiting for a worker"
    assert claim(pclient, register(pclient, admin, "other"), free={"cpus": 0.1, "memory_mb": 1}) is None
    got = claim(pclient, token)
    assert got is not None and got["id"] == job["id"] and got["attempt"] == 1
    jt = bearer(got["token"])
    assert got["spec"]["command"][0] == "python" and got["params"] == {"name": "world", "times": 1}
    assert claim(pclient, token) is None  # nothing else queued
    assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "staging"

    assert pclient.post(f"/api/v1/worker/jobs/{job['id']}/start", json={}, headers=jt).json() == {
        "state": "running"
    }
    log = b"hello from far away\n"
    r = pclient.post(f"/api/v1/worker/jobs/{job['id']}/log", content=log, headers={**jt, "Log-Offset": "0"})
    assert r.json() == {"size": len(log)}
    again = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/log", content=log, headers={**jt, "Log-Offset": "0"}
    )
    assert again.json() == {"size": len(log)}  # a resent chunk is not written twice
    gap = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/log", content=b"x", headers={**jt, "Log-Offset": "999"}
    )
    assert gap.status_code == 409 and gap.json() == {"size": len(log)}
    assert pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/progress", json={"fraction": 0.5}, headers=jt
    ).json() == {"cancel": False}
    out = pclient.put(f"/api/v1/worker/jobs/{job['id']}/outputs/sub/greeting.txt", content=b"hi", headers=jt)
    assert out.status_code == 200 and out.json()["sha256"] == hashlib.sha256(b"hi").hexdigest()
    done = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish",
        json={
            "outcome": "exited",
            "exit_code": 0,
            "usage": {"wall_s": 1.5, "cpu_s": 0.2, "peak_memory_mb": 30},
        },
        headers=jt,
    )
    assert done.json() == {"state": "succeeded"}
    final = pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert final["message"] == "1 output file" and final["usage"]["wall_s"] == 1.5
    assert pclient.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text == log.decode()
    assert (
        pclient.get(f"/api/v1/jobs/{job['id']}/outputs/sub/greeting.txt", headers=user.headers).content
        == b"hi"
    )
    late = pclient.post(f"/api/v1/worker/jobs/{job['id']}/progress", json={"fraction": 1}, headers=jt)
    assert late.status_code == 409 and late.json()["type"].endswith("fenced")


def test_a_job_in_two_calls_started_with_its_claim_and_its_log_sent_with_its_end(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    """A worker that asks to start at once a job with nothing to stage gets it running (no start call),
    and its finish may carry the log's last bytes (no log call): claim and finish are the whole run. A job
    with inputs still stages first; a worker that does not ask gets the first protocol's staging."""
    token = register(pclient, admin, "rig-1")
    job = submit(pclient, user)
    got = claim(pclient, token, start=True)
    assert got is not None and got["id"] == job["id"]
    assert got["state"] == "running" and "finish_log" in got["features"]
    assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "running"
    jt = bearer(got["token"])
    finish = f"/api/v1/worker/jobs/{job['id']}/finish"
    end = {"outcome": "exited", "exit_code": 0, "usage": {"wall_s": 0.1}}

    log = b"hello from far away\n"
    tail = {"offset": len(log), "data": base64.b64encode(b"the end\n").decode()}
    gap = pclient.post(finish, json={**end, "log": tail}, headers=jt)  # the log's first bytes never came
    assert gap.status_code == 409 and gap.json() == {"size": 0}
    assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "running"
    bad = pclient.post(finish, json={**end, "log": {"offset": -1, "data": "not base64!"}}, headers=jt)
    assert bad.status_code == 422
    assert {tuple(e["loc"]) for e in bad.json()["errors"]} == {("log", "offset")}
    bad = pclient.post(finish, json={**end, "log": {"offset": 0, "data": "not base64!"}}, headers=jt)
    assert bad.status_code == 422 and [tuple(e["loc"]) for e in bad.json()["errors"]] == [("log", "data")]
    whole = {"offset": 0, "data": base64.b64encode(log + b"the end\n").decode()}
    done = pclient.post(finish, json={**end, "log": whole}, headers=jt)
    assert done.json() == {"state": "succeeded"}, done.text
    assert (
        pclient.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
        == "hello from far away\nthe end\n"
    )
    history = [
        e["to_state"] for e in pclient.get(f"/api/v1/jobs/{job['id']}/events", headers=user.headers).json()
    ]
    assert history == ["queued", "staging", "running", "finishing", "succeeded"]

    r = pclient.put("/api/v1/files/trace.csv", content=b"t,v\n0,1\n", headers=user.headers)
    assert r.status_code == 201, r.text
    with_inputs = submit(pclient, user, app="spikes", params={"threshold": 5}, inputs={"trace": "trace.csv"})
    plain = submit(pclient, user)
    first = claim(pclient, token, start=True)
    assert first is not None and first["id"] == with_inputs["id"] and first["state"] == "staging"
    second = claim(pclient, token)  # the first protocol: no start asked
    assert second is not None and second["id"] == plain["id"] and second["state"] == "staging"


def _handed_to_engine(settings: Settings, job_id: str) -> str:
    """Hand a queued job to an engine's queue, as the Slurm executor does; the job token its runner gets."""
    db = Database(settings)
    try:
        with db.session() as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None
            worker = handover.engine_worker(session, "slurm")
            handover.hand_over(session, settings, job, worker)
            return handover.handover_token(settings, job, worker)
    finally:
        db.dispose()


def test_a_runner_s_take_starts_at_once_a_job_with_nothing_to_stage(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    """As with a claim's start: the runner Slurm or Celery started asks, and a job with nothing to stage is
    running from its take (no start call); one with inputs still stages; a runner that does not ask (an
    older one) gets staging."""
    r = pclient.put("/api/v1/files/trace.csv", content=b"t,v\n0,1\n", headers=user.headers)
    assert r.status_code == 201, r.text
    plain, older = submit(pclient, user), submit(pclient, user)
    with_inputs = submit(pclient, user, app="spikes", params={"threshold": 5}, inputs={"trace": "trace.csv"})
    for job, state in ((plain, "running"), (with_inputs, "staging")):
        token = _handed_to_engine(settings, job["id"])
        r = pclient.post(f"/api/v1/worker/jobs/{job['id']}/take?start=true", headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.json()["job"]["state"] == state
        assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == state
    token = _handed_to_engine(settings, older["id"])
    r = pclient.post(f"/api/v1/worker/jobs/{older['id']}/take", headers=bearer(token))
    assert r.status_code == 200 and r.json()["job"]["state"] == "staging", r.text


def test_a_claim_takes_as_many_jobs_as_fit_together_each_its_own_attempt(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "rig")
    ids = [submit(pclient, user, resources={"cpus": 1, "memory_mb": 100})["id"] for _ in range(5)]
    free = {"cpus": 3, "memory_mb": 8192, "gpus": 0}
    r = pclient.post(
        "/api/v1/worker/claim",
        json={"free": free, "wait_s": 0, "max_jobs": 16, "start": True},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    taken = [answer["job"], *answer["more"]]
    assert [a["id"] for a in taken] == ids[:3]  # the oldest three: as many as the 3 CPUs hold
    assert len({a["token"] for a in taken}) == 3
    for a in taken:  # each job's own token reports for it, and for no other
        assert a["state"] == "running" and a["attempt"] == 1
        r = pclient.post(f"/api/v1/worker/jobs/{a['id']}/heartbeat", json={}, headers=bearer(a["token"]))
        assert r.status_code == 200, r.text
    other = pclient.post(
        f"/api/v1/worker/jobs/{ids[1]}/heartbeat", json={}, headers=bearer(taken[0]["token"])
    )
    assert other.status_code in (401, 403, 404)
    # "max_jobs" bounds it too; one asked by default, with nothing in "more"
    r = pclient.post(
        "/api/v1/worker/claim", json={"free": free, "wait_s": 0, "max_jobs": 1}, headers=bearer(token)
    )
    assert r.status_code == 200 and r.json()["job"]["id"] == ids[3] and r.json()["more"] == []
    one = claim(pclient, token)
    assert one is not None and one["id"] == ids[4]
    r = pclient.post(
        "/api/v1/worker/claim", json={"free": free, "wait_s": 0, "max_jobs": 17}, headers=bearer(token)
    )
    assert r.status_code == 422 and "max_jobs" in r.text


def test_a_lost_lease_requeues_and_fences_the_late_worker(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    slow, fast = register(pclient, admin, "slow"), register(pclient, admin, "fast")
    job = submit(pclient, user)
    first = claim(pclient, slow)
    assert first is not None
    one = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/log",
        content=b"one\n",
        headers={**bearer(first["token"]), "Log-Offset": "0"},
    )
    assert one.json() == {"size": 4}
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        session.execute(update(Job).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with ctx.db.session() as session:
        assert claims.expire_leases(session) == 1
    assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "queued"
    second = claim(pclient, fast)
    assert second is not None and second["attempt"] == 2
    for call in ("start", "finish"):
        body = {} if call == "start" else {"outcome": "exited", "exit_code": 0}
        r = pclient.post(f"/api/v1/worker/jobs/{job['id']}/{call}", json=body, headers=bearer(first["token"]))
        assert r.status_code == 409 and r.json()["type"].endswith("fenced")
    beat = pclient.post(
        "/api/v1/worker/heartbeat", json={"jobs": [{"id": job["id"], "attempt": 1}]}, headers=bearer(slow)
    ).json()
    assert beat["abort"] == [job["id"]] and beat["cancel"] == []
    # the second attempt counts log offsets from its own start; its lines follow the first attempt's
    for _ in range(2):
        two = pclient.post(
            f"/api/v1/worker/jobs/{job['id']}/log",
            content=b"two\n",
            headers={**bearer(second["token"]), "Log-Offset": "0"},
        )
        assert two.json() == {"size": 4}
    r = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish",
        json={"outcome": "exited", "exit_code": 0},
        headers=bearer(second["token"]),
    )
    assert r.json() == {"state": "succeeded"}
    events = pclient.get(f"/api/v1/jobs/{job['id']}/events", headers=user.headers).json()
    assert [e["to_state"] for e in events].count("succeeded") == 1
    log = pclient.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    assert log == "one\n[labcloud] attempt 2 on worker fast\ntwo\n"


def test_a_worker_reports_a_lost_run_and_outputs_it_could_not_keep(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "rig")
    job = submit(pclient, user)
    first = claim(pclient, token)
    assert first is not None and first["id"] == job["id"]
    r = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish",
        json={"outcome": "lost", "message": "the runner vanished"},
        headers=bearer(first["token"]),
    )
    assert r.json() == {"state": "queued"}  # attempts remain: it runs again
    second = claim(pclient, token)
    assert second is not None and second["id"] == job["id"] and second["attempt"] == 2
    bad = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish",
        json={"outcome": "melted"},
        headers=bearer(second["token"]),
    )
    assert bad.status_code == 422 and "outcome" in bad.text
    r = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish",
        json={"outcome": "exited", "exit_code": 0, "problem": "output upload failed: disk full"},
        headers=bearer(second["token"]),
    )
    assert r.json() == {"state": "failed"}
    failed = pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert failed["reason"] == "system_error" and "disk full" in failed["message"]


def test_heartbeats_renew_leases_and_carry_cancels(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "w")
    job = submit(pclient, user)
    got = claim(pclient, token)
    assert got is not None
    before = datetime.fromisoformat(got["lease_expires_at"])
    assert (
        pclient.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers).json()["state"] == "cancelling"
    )
    beat = pclient.post(
        "/api/v1/worker/heartbeat",
        json={"jobs": [{"id": job["id"], "attempt": 1}], "telemetry": {"load1": 0.5}},
        headers=bearer(token),
    ).json()
    assert beat["cancel"] == [job["id"]] and beat["abort"] == []
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        row = session.get(Job, uuid.UUID(job["id"]))
        assert row is not None and row.lease_expires_at is not None and row.lease_expires_at >= before
    r = pclient.post(
        f"/api/v1/worker/jobs/{job['id']}/finish", json={"outcome": "cancelled"}, headers=bearer(got["token"])
    )
    assert r.json() == {"state": "cancelled"}
    listed = pclient.get("/api/v1/workers", headers=admin.headers).json()["items"]
    assert [(w["name"], w["state"], w["telemetry"]) for w in listed] == [("w", "active", {"load1": 0.5})]


def test_labels_route_jobs_to_matching_workers(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    write_app(settings.effective_apps_dir, "board", ["true"], labels={"platform": "spinnaker"})
    pclient.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    plain, board = register(pclient, admin, "plain"), register(pclient, admin, "board", platform="spinnaker")
    job = submit(pclient, user, app="board", params={})
    assert job["message"] == "waiting for a worker with platform=spinnaker"
    assert claim(pclient, plain) is None
    assert claim(pclient, plain, labels={"platform": "loihi"}) is None
    got = claim(pclient, board)
    assert got is not None and got["id"] == job["id"]


def test_concurrent_claims_take_each_job_once(pclient: TestClient, admin: Account, user: Account) -> None:
    tokens = [register(pclient, admin, f"w{i}") for i in range(6)]
    jobs = {submit(pclient, user)["id"] for _ in range(30)}
    taken: list[str] = []
    lock = threading.Lock()

    def drain(token: str, most: int) -> None:  # some take one job a claim, some several
        while True:
            r = pclient.post(
                "/api/v1/worker/claim",
                json={"free": FREE, "wait_s": 0, "max_jobs": most},
                headers=bearer(token),
            )
            if r.status_code == 204:
                return
            assert r.status_code == 200, r.text
            assert len(r.json()["more"]) < most
            with lock:
                taken.extend(a["id"] for a in [r.json()["job"], *r.json()["more"]])

    threads = [threading.Thread(target=drain, args=(t, 1 + 2 * (i % 2))) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(jobs)


def test_drain_and_revoke(pclient: TestClient, admin: Account, user: Account) -> None:
    token = register(pclient, admin, "rig")
    worker_id = pclient.get("/api/v1/workers", headers=admin.headers).json()["items"][0]["id"]
    job = submit(pclient, user)
    got = claim(pclient, token)
    assert got is not None
    drained = pclient.post(f"/api/v1/workers/{worker_id}/drain", headers=admin.headers).json()
    assert drained["running_jobs"] == [job["id"]]
    submit(pclient, user)
    assert claim(pclient, token) is None  # draining: no more work
    r = pclient.post(f"/api/v1/workers/{worker_id}/revoke", headers=admin.headers)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert (
        pclient.post(
            "/api/v1/worker/claim", json={"free": FREE, "wait_s": 0}, headers=bearer(token)
        ).status_code
        == 401
    )
    assert (
        pclient.post(
            f"/api/v1/worker/jobs/{job['id']}/start", json={}, headers=bearer(got["token"])
        ).status_code
        == 401
    )
    assert (
        pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "queued"
    )  # re-queued


def test_a_revoked_token_is_refused_by_a_claim_that_finds_nothing_to_take(
    pclient: TestClient, admin: Account
) -> None:
    """The gate remembers a token it let in; a claim that takes nothing (the queue is empty, so no claim is
    tried in the database) still looks it up before answering or waiting."""
    token = register(pclient, admin, "rig")
    assert claim(pclient, token) is None  # let in, and remembered
    worker_id = pclient.get("/api/v1/workers", headers=admin.headers).json()["items"][0]["id"]
    assert pclient.post(f"/api/v1/workers/{worker_id}/revoke", headers=admin.headers).status_code == 200
    for wait_s in (0, 1):
        r = pclient.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": wait_s}, headers=bearer(token))
        assert r.status_code == 401, r.text


def test_worker_tokens_are_admin_made_and_only_open_worker_endpoints(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    assert pclient.post("/api/v1/workers", json={"name": "x"}, headers=user.headers).status_code == 403
    token = register(pclient, admin, "x")
    assert pclient.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert pclient.post("/api/v1/workers", json={"name": "x"}, headers=admin.headers).status_code == 409
    user_token = user.headers
    r = pclient.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": 0}, headers=user_token)
    assert r.status_code == 401


def waiting_claim(client: TestClient, token: str, wait_s: float) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def wait() -> None:
        r = client.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": wait_s}, headers=bearer(token))
        result["status"], result["at"] = r.status_code, datetime.now(UTC)
        result["job"] = r.json()["job"]["id"] if r.status_code == 200 else None

    waiter = threading.Thread(target=wait)
    waiter.start()
    waker = client.app.state.ctx.waker  # type: ignore[attr-defined]
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while not waker.waiting and datetime.now(UTC) < deadline:
        threading.Event().wait(0.01)
    assert waker.waiting
    return waiter, result


def test_a_waiting_claim_wakes_when_a_job_arrives(pclient: TestClient, admin: Account, user: Account) -> None:
    waiter, result = waiting_claim(pclient, register(pclient, admin, "idle"), 20)
    job = submit(pclient, user)
    submitted = datetime.now(UTC)
    waiter.join(timeout=30)
    assert result["status"] == 200 and result["job"] == job["id"]
    assert result["at"] - submitted < timedelta(seconds=4)  # woken by the submit, not the 20 s timeout


def test_idle_claims_sleep_until_their_deadline_not_each_on_a_timer(
    pclient: TestClient, admin: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of idle devices wait in claims: nothing wakes them while no job waits, however often the
    server's one recheck looks."""
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    ctx.queue_watch.interval_s = 0.1
    ctx.queue_watch.wake()
    waits: list[float] = []
    original = ctx.waker.wait

    async def counted(since: int, timeout: float) -> None:
        waits.append(timeout)
        await original(since, timeout)

    monkeypatch.setattr(ctx.waker, "wait", counted)
    generation = ctx.waker.generation
    waiter, result = waiting_claim(pclient, register(pclient, admin, "idle-a"), 5.5)
    waiter.join(timeout=30)
    assert result["status"] == 204
    assert len(waits) == 1 and waits[0] > 5.0  # one wait, for the whole time (past the 5 s recheck)
    assert ctx.waker.generation == generation


def test_a_job_whose_wake_up_was_lost_reaches_a_waiting_claim_at_the_recheck(
    pclient: TestClient, admin: Account, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    ctx.queue_watch.interval_s = 0.3
    ctx.queue_watch.wake()
    waiter, result = waiting_claim(pclient, register(pclient, admin, "idle-b"), 20)
    with monkeypatch.context() as lost:  # the submit's wake-up never arrives here
        lost.setattr(ctx.waker, "notify", lambda: None)
        job = submit(pclient, user)
    submitted = datetime.now(UTC)
    waiter.join(timeout=30)
    assert result["status"] == 200 and result["job"] == job["id"]
    assert result["at"] - submitted < timedelta(seconds=4)  # the recheck found it, not the deadline


def test_a_worker_cannot_put_outputs_outside_the_job_s_folder(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "sly")
    job = submit(pclient, user)
    got = claim(pclient, token)
    assert got is not None
    jt = bearer(got["token"])
    for name in (
        "..%2F..%2Fplanted.txt",
        "%2e%2e/%2e%2e/planted.txt",
        "a/..%2F..%2F..%2Fplanted.txt",
        "%2Fetc%2Fx",
    ):
        r = pclient.put(f"/api/v1/worker/jobs/{job['id']}/outputs/{name}", content=b"x", headers=jt)
        assert r.status_code == 400, (name, r.status_code, r.text)
    listing = pclient.get("/api/v1/files", params={"prefix": ""}, headers=user.headers).json()
    assert [e["path"] for e in listing["items"]] == []  # nothing landed anywhere in the owner's space


# ---------------------------------------------------------------------------------------------- containers

BUSYBOX = "labcloud/busybox:1"


def heartbeat(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/worker/heartbeat", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def engine(kind: str, *images: str) -> dict[str, Any]:
    return {"engines": [{"kind": kind, "images": list(images)}]}


def boxed_entrypoint(client: TestClient, account: Account) -> dict[str, Any]:
    r = client.get("/api/v1/apps/boxed", headers=account.headers)
    assert r.status_code == 200, r.text
    entrypoint: dict[str, Any] = r.json()["versions"]["1.0"]["entrypoints"]["main"]
    return entrypoint


def test_without_an_engine_here_container_apps_can_run_once_a_worker_has_one(
    settings: Settings, request: pytest.FixtureRequest
) -> None:
    """Jobs go to pull workers by default: the pull executor says its jobs run on the workers' engines,
    so container apps are available as soon as a live worker reports one, here or not."""
    settings.container_engine = "none"
    write_app(settings.effective_apps_dir, "boxed", ["true"], runtime="container", image=BUSYBOX)
    pclient: TestClient = request.getfixturevalue("pclient")
    admin: Account = request.getfixturevalue("admin")
    user: Account = request.getfixturevalue("user")
    before = boxed_entrypoint(pclient, user)
    assert before["available"] is False
    assert "container_engine = none" in before["unavailable_reason"]
    assert "no connected worker has a container engine" in before["unavailable_reason"]
    bare = register(pclient, admin, "bare")
    heartbeat(pclient, bare, engine_problem="docker is not installed; podman is not installed")
    assert boxed_entrypoint(pclient, user)["available"] is False
    holder = register(pclient, admin, "holder")
    heartbeat(pclient, holder, **engine("docker", BUSYBOX))
    assert boxed_entrypoint(pclient, user) == {**before, "available": True, "unavailable_reason": None}
    with TestClient(create_app(settings, dispatch=False)) as looking:  # no executor loaded: its class says
        assert boxed_entrypoint(looking, user)["available"] is True
    settings.executor = "local"  # jobs run here: the workers' engines do not count
    with TestClient(create_app(settings, dispatch=False)) as local:
        reason = boxed_entrypoint(local, user)["unavailable_reason"]
    assert "container_engine = none" in reason and "worker" not in reason


def test_container_jobs_go_to_workers_with_an_engine_first_to_one_with_the_image(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    write_app(settings.effective_apps_dir, "boxed", ["true"], runtime="container", image=BUSYBOX)
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    ctx.apps.refresh(force=True)
    bare = register(pclient, admin, "bare")
    heartbeat(pclient, bare, engine_problem="docker is not installed; podman is not installed")
    holder = register(pclient, admin, "holder")
    heartbeat(pclient, holder, **engine("podman", f"localhost/{BUSYBOX}", "docker.io/library/python:3"))
    other = register(pclient, admin, "other")
    heartbeat(pclient, other, **engine("docker", "other/thing:2"))
    listed = {w["name"]: w for w in pclient.get("/api/v1/workers", headers=admin.headers).json()["items"]}
    assert listed["holder"]["engines"] == [
        {"kind": "podman", "images": [f"localhost/{BUSYBOX}", "docker.io/library/python:3"], "image_ids": {}}
    ]
    assert listed["bare"]["engines"] == [] and "docker is not installed" in listed["bare"]["engine_problem"]

    first = submit(pclient, user, app="boxed", params={})
    assert first["message"] == "waiting for a worker with a container engine"
    assert claim(pclient, bare) is None  # no engine: never
    assert claim(pclient, other) is None  # an engine without the image: left to the holder for a while
    plain = submit(pclient, user)
    second = submit(pclient, user, app="boxed", params={})
    got = [claim(pclient, holder) for _ in range(2)]
    # the holder takes the container jobs whose image it has before the older process job
    assert [g["id"] if g else None for g in got] == [first["id"], second["id"]]
    assert got[0] is not None and got[0]["image"] is None and got[0]["spec"]["image"] == BUSYBOX
    taken = claim(pclient, bare)
    assert taken is not None and taken["id"] == plain["id"]  # a worker without an engine runs the rest

    # once the job has waited IMAGE_AFFINITY_S, or when no live worker has the image, any engine takes it
    late = submit(pclient, user, app="boxed", params={})
    assert claim(pclient, other) is None
    with ctx.db.session() as session:
        queued_at = datetime.now(UTC) - timedelta(seconds=claims.IMAGE_AFFINITY_S + 1)
        session.execute(update(Job).where(Job.id == uuid.UUID(late["id"])).values(updated_at=queued_at))
    taken = claim(pclient, other)
    assert taken is not None and taken["id"] == late["id"]
    quiet = submit(pclient, user, app="boxed", params={})
    assert claim(pclient, other) is None
    with ctx.db.session() as session:
        gone = datetime.now(UTC) - timedelta(seconds=settings.lease_seconds + 1)
        session.execute(update(Worker).where(Worker.name == "holder").values(last_heartbeat_at=gone))
    taken = claim(pclient, other)
    assert taken is not None and taken["id"] == quiet["id"]

    # a rerun runs the image its first run ran, by content id
    image_id = "sha256:" + "a" * 64
    done = pclient.post(
        f"/api/v1/worker/jobs/{first['id']}/finish",
        json={"outcome": "exited", "exit_code": 0, "image": image_id},
        headers=bearer(got[0]["token"]),
    )
    assert done.json() == {"state": "succeeded"}
    rerun = pclient.post(f"/api/v1/jobs/{first['id']}/rerun", headers=user.headers).json()
    heartbeat(pclient, holder, **engine("podman", BUSYBOX))
    again = claim(pclient, holder)
    assert again is not None and again["id"] == rerun["id"] and again["image"] == image_id


ZERO_ID = "sha256:" + "0" * 64


def test_engine_reports_are_bounded(pclient: TestClient, admin: Account) -> None:
    token = register(pclient, admin, "big")
    for body in (
        engine("docker", *(f"img/{i}:1" for i in range(1001))),
        engine("lxc", BUSYBOX),
        engine("docker", "two words:1"),
        engine("docker", "x" * 301),
        {"engines": [{"kind": "docker", "images": [], "extra": 1}]},
        {"engines": [{"kind": "docker"}] * 5},
        {"engine_problem": "x" * 1001},
        {"engines": [{"kind": "docker", "image_ids": {BUSYBOX: "sha256:not-a-content-id"}}]},
        {"engines": [{"kind": "docker", "image_ids": {"two words:1": ZERO_ID}}]},
        {"engines": [{"kind": "docker", "image_ids": {f"i/{i}:1": ZERO_ID for i in range(2001)}}]},
    ):
        r = pclient.post("/api/v1/worker/heartbeat", json=body, headers=bearer(token))
        assert r.status_code == 422, (str(body)[:80], r.status_code)
    heartbeat(pclient, token, **engine("docker", *(f"img/{i}:1" for i in range(1000))))


def test_a_page_of_queued_jobs_says_why_each_waits(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    """Why a queued job waits is worked out once per kind of job on a page: jobs of one kind share it, and
    each kind (other labels, other named workers, a held job) still says its own."""
    write_app(settings.effective_apps_dir, "board", ["true"], labels={"platform": "spinnaker"})
    pclient.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    register(pclient, admin, "rig-1")
    plain = [submit(pclient, user)["id"] for _ in range(3)]
    boards = [submit(pclient, user, app="board", params={})["id"] for _ in range(2)]
    named = submit(pclient, user, workers=["rig-1"])["id"]
    expected = {i: "waiting for a worker" for i in plain}
    expected |= {i: "waiting for a worker with platform=spinnaker" for i in boards}
    expected[named] = "waiting for worker rig-1 (down)"
    held = claim(pclient, register(pclient, admin, "rig-2"))
    assert held is not None and held["id"] == plain[0]
    page = pclient.get("/api/v1/jobs", params={"limit": 10}, headers=user.headers).json()["items"]
    listed = {j["id"]: j["message"] for j in page}
    assert listed[plain[0]] != "waiting for a worker"  # held by a worker: its own message, not a wait
    del listed[plain[0]], expected[plain[0]]
    assert listed == expected
    for job_id, message in expected.items():  # the same words as the job's own page
        assert pclient.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["message"] == message
