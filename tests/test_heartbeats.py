"""Heartbeats written together (services/heartbeats.py): many heartbeats share a transaction, each is answered
only once committed, one worker's refusal or one bad heartbeat costs the others nothing, and a token the
gate remembers still stops working the moment its worker is revoked."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from conftest import Account
from labcloud.db.engine import Database
from labcloud.db.models import Worker, WorkerState
from labcloud.errors import Unauthorized
from labcloud.runtime import Runtime, prepare_database
from labcloud.services import workers
from labcloud.services.heartbeats import HeartbeatWriter
from labcloud.settings import Settings


def body(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "capacity": {"cpus": 2},
        "free": {"cpus": 1},
        "telemetry": {"load1": 0.5 + n, "status": {"temperature_c": 20 + n}},
        "version": f"v{n}",
        "jobs": [],
        **extra,
    }


@pytest.fixture
def ctx(settings: Settings) -> Any:
    runtime = Runtime.create(settings)
    prepare_database(runtime)
    yield runtime
    runtime.db.dispose()


def register(db: Database, count: int) -> list[uuid.UUID]:
    with db.session() as session:
        return [workers.register(session, f"hb-{i}", {})[0].id for i in range(count)]


def commits_of(db: Database) -> list[int]:
    seen: list[int] = []
    event.listen(db.engine, "commit", lambda conn: seen.append(1))
    return seen


def test_many_heartbeats_share_a_transaction_and_each_is_answered_once_written(ctx: Any) -> None:
    ids = register(ctx.db, 30)
    writer = HeartbeatWriter(ctx.db, ctx.settings, ctx.device_schemas)
    commits = commits_of(ctx.db)

    async def all_at_once() -> list[dict[str, Any]]:
        return await asyncio.gather(*(writer.beat(worker_id, body(n)) for n, worker_id in enumerate(ids)))

    try:
        answers = asyncio.run(all_at_once())
    finally:
        writer.close()
    assert [a["state"] for a in answers] == ["active"] * 30
    assert all(a["cancel"] == [] and a["abort"] == [] and a["status_problems"] == [] for a in answers)
    assert 1 <= len(commits) < 5, f"{len(commits)} transactions for 30 heartbeats"
    with ctx.db.sessions() as session:
        rows = {w.id: w for w in session.scalars(select(Worker).where(Worker.id.in_(ids)))}
    for n, worker_id in enumerate(ids):
        row = rows[worker_id]
        assert row.last_heartbeat_at is not None
        assert row.version == f"v{n}"
        assert row.telemetry["status"] == {"temperature_c": 20 + n}
        assert row.capacity == {"cpus": 2, "free": {"cpus": 1}}


def test_a_revoked_worker_is_refused_and_a_bad_heartbeat_fails_alone(ctx: Any) -> None:
    ids = register(ctx.db, 6)
    with ctx.db.session() as session:
        workers.revoke(session, workers.get(session, ids[0]))
    writer = HeartbeatWriter(ctx.db, ctx.settings, ctx.device_schemas)
    # Not a job id: only this heartbeat's writing fails, which fails the shared transaction; then each
    # heartbeat is written on its own and the others are kept.
    broken = body(99, jobs=[{"id": "not-a-uuid", "attempt": 1}])

    async def all_at_once() -> list[Any]:
        beats = [writer.beat(ids[0], body(0)), writer.beat(ids[1], broken)]
        beats += [writer.beat(worker_id, body(n)) for n, worker_id in enumerate(ids[2:], start=2)]
        return await asyncio.gather(*beats, return_exceptions=True)

    try:
        outcomes = asyncio.run(all_at_once())
    finally:
        writer.close()
    assert isinstance(outcomes[0], Unauthorized)
    assert isinstance(outcomes[1], ValueError)
    assert all(isinstance(o, dict) and o["state"] == "active" for o in outcomes[2:]), outcomes
    with ctx.db.sessions() as session:
        rows = {w.id: w for w in session.scalars(select(Worker).where(Worker.id.in_(ids)))}
    assert rows[ids[0]].state == WorkerState.REVOKED and rows[ids[0]].last_heartbeat_at is None
    assert rows[ids[1]].last_heartbeat_at is None  # its transaction was rolled back
    assert all(rows[i].version == f"v{n}" for n, i in enumerate(ids) if n >= 2)


def test_closing_writes_what_is_pending_and_later_heartbeats_are_refused(ctx: Any) -> None:
    [worker_id] = register(ctx.db, 1)
    writer = HeartbeatWriter(ctx.db, ctx.settings, ctx.device_schemas)

    async def beat_then_close() -> dict[str, Any]:
        pending = asyncio.ensure_future(writer.beat(worker_id, body(1)))
        await asyncio.sleep(0)  # handed to the writer
        closing = asyncio.get_running_loop().run_in_executor(None, writer.close)
        answer = await pending
        await closing
        return answer

    assert asyncio.run(beat_then_close())["state"] == "active"
    with pytest.raises(RuntimeError, match="stopping"):
        asyncio.run(writer.beat(worker_id, body(2)))


def test_a_remembered_token_stops_at_once_when_its_worker_is_revoked(
    pclient: TestClient, admin: Account
) -> None:
    r = pclient.post("/api/v1/workers", json={"name": "remembered", "labels": {}}, headers=admin.headers)
    assert r.status_code == 201, r.text
    worker_id, token = r.json()["id"], r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(3):  # the gate looks the token up once, then remembers it
        r = pclient.post("/api/v1/worker/heartbeat", json=body(n), headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "active"
    r = pclient.post(f"/api/v1/workers/{worker_id}/revoke", headers=admin.headers)
    assert r.status_code == 200
    r = pclient.post("/api/v1/worker/heartbeat", json=body(4), headers=headers)
    assert r.status_code == 401, r.text
    assert "revoked" in r.json()["detail"]
    r = pclient.post("/api/v1/worker/claim", json={"free": {"cpus": 1}, "wait_s": 0}, headers=headers)
    assert r.status_code == 401, r.text


def test_a_worker_twice_in_one_batch_is_written_in_order_and_sampled_once(ctx: Any) -> None:
    from labcloud.db.models import DeviceSample

    [worker_id] = register(ctx.db, 1)
    with ctx.db.session() as session:
        outcomes = workers.heartbeats(
            session, ctx.settings, [(worker_id, body(1)), (worker_id, body(2))], ctx.device_schemas
        )
    assert [o["state"] for o in outcomes if isinstance(o, dict)] == ["active", "active"]
    with ctx.db.sessions() as session:
        row = session.get(Worker, worker_id)
        assert row is not None and row.version == "v2"  # the later one wins
        samples = session.scalars(select(DeviceSample).where(DeviceSample.worker_id == worker_id)).all()
    assert [s.data["status.temperature_c"] for s in samples] == [21]  # one per interval: the first
