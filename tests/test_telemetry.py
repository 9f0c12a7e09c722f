"""JSON logs that name each line's request, and metrics that count a state change only once it commits."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from conftest import Account, backend
from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.services import claims, lifecycle
from labcloud.services.job_states import JobState
from labcloud.settings import Settings
from labcloud.telemetry import logs, metrics
from live_server import login_headers, serve, server_env
from test_worker_api import bearer, claim, register, submit


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every log line, parsed; only the first admin's announcement (printed, never logged) is not JSON."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        if line.startswith("labcloud: created the first administrator") or line.startswith("  "):
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_json_logs_name_the_request_of_every_line(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    admin = ("json-admin@example.org", "json-admin-password")
    env = server_env(
        settings.home,
        admin,
        database_url if backend() == "postgresql" else None,
        log_format="json",
        log_level="info",
    )
    log_path = tmp_path / "server.log"
    with serve(env, log_path) as url:
        headers = login_headers(url, *admin)
        r = httpx.post(
            f"{url}/api/v1/users",
            json={"email": "logged@example.org", "password": "logged-password-1", "name": "Logged"},
            headers={**headers, "X-Request-ID": "create-user-42"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == "create-user-42"
        r = httpx.post(
            f"{url}/api/v1/users",
            json={"email": "second@example.org", "password": "logged-password-2", "name": "Second"},
            headers={**headers, "X-Request-ID": "x" * 129},  # too long: replaced
        )
        assert r.status_code == 201, r.text
        fresh = r.headers["x-request-id"]
        assert fresh != "x" * 129 and len(fresh) == 32
        # A fleet's routine calls stay out of the access log; a refused one is written.
        r = httpx.post(f"{url}/api/v1/workers", json={"name": "quiet-rig"}, headers=headers)
        worker = {"Authorization": f"Bearer {r.json()['token']}"}
        beat = httpx.post(f"{url}/api/v1/worker/heartbeat", json={}, headers=worker)
        took = httpx.post(
            f"{url}/api/v1/worker/claim", json={"free": {"cpus": 1}, "wait_s": 0}, headers=worker
        )
        bad = {"Authorization": "Bearer lcw_not-a-token"}
        refused = httpx.post(f"{url}/api/v1/worker/heartbeat", json={}, headers=bad)
        assert (beat.status_code, took.status_code, refused.status_code) == (200, 204, 401)

    lines = _json_lines(log_path)  # every line, uvicorn's own too
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("request_id") == "create-user-42"]
    assert {line["logger"] for line in mine} == {"labcloud.services.users", "uvicorn.access"}, mine
    created = next(line for line in mine if line["logger"] == "labcloud.services.users")
    assert "logged@example.org" in created["message"]
    access = next(line for line in mine if line["logger"] == "uvicorn.access")
    assert access["method"] == "POST" and access["path"] == "/api/v1/users" and access["status"] == 201
    second = [line for line in lines if line.get("request_id") == fresh]
    assert any("second@example.org" in line["message"] for line in second)
    worker_lines = [line for line in lines if "/api/v1/worker/" in str(line.get("path"))]
    assert [(line["path"], line["status"]) for line in worker_lines] == [("/api/v1/worker/heartbeat", 401)]
    # lines outside any request (start, dispatch) carry no id
    assert any("ready" in line["message"] and "request_id" not in line for line in lines)


def test_routine_worker_calls_are_logged_when_asked() -> None:
    access = logging.getLogger("uvicorn.access")

    def kept(path: str, status: int) -> bool:
        record = access.makeRecord(access.name, logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', None, None)
        record.args = ("127.0.0.1:1", "POST", path, "1.1", status)
        return access.filter(record) is not False

    try:
        logs.quiet_worker_calls(True)
        logs.quiet_worker_calls(True)  # once is enough: no second filter
        assert sum(isinstance(f, logs.QuietWorkerCalls) for f in access.filters) == 1
        assert not kept("/api/v1/worker/heartbeat", 200) and not kept("/api/v1/worker/claim", 204)
        assert kept("/api/v1/worker/heartbeat", 401) and kept("/api/v1/worker/claim", 500)
        assert kept("/api/v1/jobs", 201)
        logs.quiet_worker_calls(False)  # access_log_worker_calls = true
        assert kept("/api/v1/worker/heartbeat", 200)
    finally:
        logs.quiet_worker_calls(False)


def _queue_waits(app: str) -> float:
    return metrics.REGISTRY.get_sample_value("labcloud_job_queue_wait_seconds_count", {"app": app}) or 0.0


def test_a_state_change_counts_only_once_it_commits(
    pclient: TestClient, user: Account, settings: Settings
) -> None:
    r = pclient.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    db = Database(settings)
    before = _queue_waits("hello")
    try:
        with pytest.raises(RuntimeError), db.session() as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None
            lifecycle.transition(session, job, JobState.STAGING, attempts=1)
            raise RuntimeError("the transaction fails after the change")
        assert _queue_waits("hello") == before  # rolled back: not counted

        with db.session() as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None and job.state == JobState.QUEUED
            with pytest.raises(RuntimeError), session.begin_nested():
                lifecycle.transition(session, job, JobState.STAGING, attempts=1)
                raise RuntimeError("the savepoint fails")
            session.refresh(job)
            assert job.state == JobState.QUEUED
        assert _queue_waits("hello") == before  # its savepoint rolled back: not counted

        with db.session() as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None
            lifecycle.transition(session, job, JobState.STAGING, attempts=1)
            assert _queue_waits("hello") == before  # not before the commit
        assert _queue_waits("hello") == before + 1
    finally:
        db.dispose()


def test_observations_follow_their_transaction(settings: Settings) -> None:
    db = Database(settings)
    calls: list[str] = []
    try:
        with db.session() as session:
            metrics.after_commit(session, lambda: calls.append("committed"))
            assert calls == []
        assert calls == ["committed"]
        with pytest.raises(RuntimeError), db.session() as session:
            metrics.after_commit(session, lambda: calls.append("rolled back"))
            raise RuntimeError
        with db.session() as session:
            metrics.after_commit(session, lambda: calls.append("outer"))
            with pytest.raises(RuntimeError), session.begin_nested():
                metrics.after_commit(session, lambda: calls.append("in a failed savepoint"))
                raise RuntimeError
            with session.begin_nested(), session.begin_nested():
                metrics.after_commit(session, lambda: calls.append("in a savepoint"))
            assert calls == ["committed"]  # released savepoints: not yet, the transaction may still fail
        assert calls == ["committed", "outer", "in a savepoint"]
        with pytest.raises(RuntimeError), db.session() as session:
            with session.begin_nested():
                metrics.after_commit(session, lambda: calls.append("released, then rolled back"))
            raise RuntimeError
        assert calls == ["committed", "outer", "in a savepoint"]
    finally:
        db.dispose()


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_pull_worker_job_is_timed_and_its_lost_lease_counted(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    waits = _sample("labcloud_job_queue_wait_seconds_count", app="hello")
    failed = _sample("labcloud_job_run_seconds_count", app="hello", outcome="failed")
    expiries = _sample("labcloud_lease_expiries_total")
    job = submit(pclient, user)
    first = claim(pclient, register(pclient, admin, "timed"))
    assert first is not None
    assert _sample("labcloud_job_queue_wait_seconds_count", app="hello") == waits + 1  # taken by a claim
    started = pclient.post(f"/api/v1/worker/jobs/{job['id']}/start", json={}, headers=bearer(first["token"]))
    assert started.status_code == 200, started.text

    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        session.execute(update(Job).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(RuntimeError), ctx.db.session() as session:
        assert claims.expire_leases(session) == 1
        raise RuntimeError("rolled back: nothing expired")
    assert _sample("labcloud_lease_expiries_total") == expiries
    with ctx.db.session() as session:
        assert claims.expire_leases(session) == 1
    assert _sample("labcloud_lease_expiries_total") == expiries + 1
    assert (
        _sample("labcloud_job_run_seconds_count", app="hello", outcome="failed") == failed + 1
    )  # the lost run

    # queued again: its next wait counts from the re-queue, not from the submission
    assert pclient.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == "queued"
    before = _sample("labcloud_job_queue_wait_seconds_sum", app="hello")
    with ctx.db.session() as session:  # (as if it had been re-queued an hour after it was submitted)
        session.execute(update(Job).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
    assert claim(pclient, register(pclient, admin, "second")) is not None
    assert _sample("labcloud_job_queue_wait_seconds_count", app="hello") == waits + 2
    assert _sample("labcloud_job_queue_wait_seconds_sum", app="hello") - before < 60
