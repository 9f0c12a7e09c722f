"""Retention: real jobs run by the server, aged by moving their end back in the database, lose their folders,
outputs or themselves as the policies say; a dry run lists exactly what a real run deletes; the storage use
follows; what other jobs hold, running and queued jobs, and each user's newest jobs stay."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, bearer, login
from jobs_helpers import wait_for_end, write_app
from labcloud.api.app import create_app
from labcloud.db.models import AuditEvent, Job, JobGroup, JobInput, Project, RetentionRun, User
from labcloud.registry import parse_app
from labcloud.services import housekeeping, retention
from labcloud.settings import Settings
from live_server import eventually
from test_web import browser_login
from testing.daemons import clean_env

SMALL = {"cpus": 0.1, "memory_mb": 32, "timeout_s": 60}
MAKER = ["sh", "-c", 'head -c 1000 /dev/zero > "$0/out.bin"; echo made', "{output}"]
READER = ["cat", "{inputs.data}"]


def _ctx(client: TestClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


def _apps(client: TestClient, settings: Settings, **extra: dict[str, Any]) -> None:
    apps = settings.effective_apps_dir
    write_app(apps, "maker", MAKER, resources=SMALL)
    write_app(apps, "reader", READER, inputs={"data": {"type": "file"}}, resources=SMALL)
    gate = {"cpus": settings.local_cpus or 2, "memory_mb": 32, "timeout_s": 60}  # holds every CPU
    write_app(apps, "gate", ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"], resources=gate)
    for name, block in extra.items():  # an app with a retention block of its own
        write_app(apps, name, MAKER, resources=SMALL)
        path = apps / f"{name}.yaml"
        path.write_text(json.dumps({**json.loads(path.read_text()), "retention": block}))
    _ctx(client).apps.refresh(force=True)


def _submit(client: TestClient, who: Account, body: dict[str, Any]) -> str:
    r = client.post("/api/v1/jobs", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _run(client: TestClient, who: Account, body: dict[str, Any]) -> str:
    job_id = _submit(client, who, body)
    assert wait_for_end(client, job_id, who.headers)["state"] == "succeeded"
    return job_id


def _age(client: TestClient, job_id: str, days: float) -> None:
    """The job ended ``days`` ago (and was submitted just before)."""
    at = datetime.now(UTC) - timedelta(days=days)
    with _ctx(client).db.session() as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(finished_at=at, updated_at=at))


def _state(client: TestClient, who: Account, job_id: str) -> str:
    return str(client.get(f"/api/v1/jobs/{job_id}", headers=who.headers).json()["state"])


def _used(client: TestClient, who: Account) -> tuple[int, int]:
    """The user's storage use as booked on their personal project and on their account."""
    with _ctx(client).db.session() as session:
        project = session.scalar(select(Project.storage_used_bytes).where(Project.personal_user_id == who.id))
        user = session.scalar(select(User.storage_used_bytes).where(User.id == who.id))
    assert project is not None and user is not None
    return project, user


def _objects(client: TestClient) -> set[str]:
    return set(_ctx(client).storage.iter_keys(datetime.now(UTC) + timedelta(minutes=1)))


def _planned(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((i["action"], i["job_id"]) for i in items)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **clean_env(),
        "LABCLOUD_HOME": str(settings.home),
        "LABCLOUD_DATABASE_URL": settings.effective_database_url,
        "LABCLOUD_RETENTION_JOBS_DAYS": str(settings.retention_jobs_days),
        "LABCLOUD_RETENTION_OUTPUTS_DAYS": str(settings.retention_outputs_days),
        "LABCLOUD_RETENTION_FOLDERS_DAYS": str(settings.retention_folders_days),
        "LABCLOUD_RETENTION_KEEP_LAST": str(settings.retention_keep_last),
    }
    return subprocess.run(
        [sys.executable, "-m", "labcloud.cli", "retention", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dry_run_lists_what_the_real_run_deletes_and_the_storage_use_follows(
    client: TestClient, settings: Settings, user: Account, caplog: pytest.LogCaptureFixture
) -> None:
    _apps(client, settings)
    old, outputs, folder, newest = (_run(client, user, {"app": "maker"}) for _ in range(4))
    for job_id in (old, outputs, folder, newest):
        assert (settings.jobs_dir / job_id / "attempt-1").is_dir()  # what a run leaves beside its log
    running = _submit(client, user, {"app": "gate"})
    eventually(lambda: _state(client, user, running) == "running", 30, "the gate job to run")
    queued = _submit(client, user, {"app": "maker"})  # waits behind the gate
    for job_id, days in (
        (old, 100),
        (outputs, 40),
        (folder, 10),
        (newest, 200),
        (running, 300),
        (queued, 300),
    ):
        _age(client, job_id, days)
    settings.retention_jobs_days, settings.retention_outputs_days = 90, 30
    settings.retention_folders_days, settings.retention_keep_last = 5, 1
    objects, used = _objects(client), _used(client, user)
    assert used == (4000, 4000)

    dry = _cli(settings, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert listed["dry_run"] is True
    expected = sorted([("job", old), ("outputs", outputs), ("folder", outputs), ("folder", folder)])
    assert _planned(listed["deletions"]) == expected
    assert listed["summary"]["kept_recent"] == 1  # the newest, however old
    assert _objects(client) == objects and _used(client, user) == used  # a dry run deletes nothing

    ctx = _ctx(client)
    with caplog.at_level(logging.INFO, logger="labcloud.services.retention"):
        done = retention.run(ctx.db, ctx.storage, settings, ctx.apps)
    assert _planned([i.to_json() for i in done.done]) == expected  # what the dry run listed, no more
    assert done.skipped == []
    said = [r.getMessage() for r in caplog.records if r.name == "labcloud.services.retention"]
    logged = [
        line.split(" of job ")[1].split(" ")[0] for line in said if line.startswith("retention: deleted")
    ]
    assert sorted(logged) == sorted(job_id for _, job_id in expected)  # each deletion, then the summary
    assert "jobs_deleted 1, outputs_deleted 1, folders_deleted 2, files_deleted 2, bytes_freed" in said[-1]
    assert _used(client, user) == (2000, 2000)  # two jobs' outputs of 1000 bytes each
    assert len(objects - _objects(client)) == 2
    with ctx.db.sessions() as session:  # the audit log has each deletion, by the server
        events = session.scalars(select(AuditEvent).where(AuditEvent.action.startswith("retention."))).all()
    audited = sorted((e.action.split(".")[1].removesuffix("_deleted"), e.target_id) for e in events)
    assert audited == expected
    assert {e.actor_label for e in events} == {"server"}
    assert next(e.details for e in events if e.target_id == old)["bytes"] == 1000

    h = user.headers
    assert client.get(f"/api/v1/jobs/{old}", headers=h).status_code == 404
    assert not (settings.jobs_dir / old).exists()
    kept = client.get(f"/api/v1/jobs/{outputs}", headers=h).json()
    assert kept["state"] == "succeeded" and kept["outputs_deleted_at"] is not None
    assert client.get(f"/api/v1/jobs/{outputs}/outputs", headers=h).json() == []
    assert client.get(f"/api/v1/files/jobs/{outputs}/out.bin", headers=h).status_code == 404
    assert "made" in client.get(f"/api/v1/jobs/{outputs}/logs", headers=h).text  # the log stays
    page = browser_login(client.app, user.email, user.password).get(f"/jobs/{outputs}")
    assert "deleted by the retention policy" in page.text
    assert not (settings.jobs_dir / outputs / "attempt-1").exists()
    assert not (settings.jobs_dir / folder / "attempt-1").exists()
    assert len(client.get(f"/api/v1/jobs/{folder}/outputs", headers=h).json()) == 1
    for job_id in (newest, running, queued):
        assert client.get(f"/api/v1/jobs/{job_id}", headers=h).status_code == 200
    assert (settings.jobs_dir / newest / "attempt-1").is_dir()
    assert _state(client, user, running) == "running" and _state(client, user, queued) == "queued"

    again = retention.run(ctx.db, ctx.storage, settings, ctx.apps, dry_run=True)
    assert again.done == []  # nothing is due twice
    (settings.jobs_dir / running / "attempt-1" / "work" / "open").touch()
    assert wait_for_end(client, queued, h)["state"] == "succeeded"


def test_what_other_jobs_hold_survives(
    storage_backend: str, client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings)
    h = user.headers
    assert client.put("/api/v1/files/in/data.txt", content=b"first", headers=h).status_code == 201
    source = _run(client, user, {"app": "reader", "inputs": {"data": "in/data.txt"}})
    assert client.delete("/api/v1/files/in/data.txt", headers=h).status_code == 204  # held by the job
    rerun = client.post(f"/api/v1/jobs/{source}/rerun", headers=h)
    assert rerun.status_code == 201, rerun.text
    assert wait_for_end(client, rerun.json()["id"], h)["state"] == "succeeded"

    made = _run(client, user, {"app": "maker"})
    gate = _submit(client, user, {"app": "gate"})
    eventually(lambda: _state(client, user, gate) == "running", 30, "the gate job to run")
    reads = _submit(client, user, {"app": "reader", "inputs": {"data": f"jobs/{made}/out.bin"}})
    grouped = _submit(client, user, {"app": "maker"})  # ended long ago, in a session with the gate
    ctx = _ctx(client)
    with ctx.db.session() as session:
        job = session.get(Job, uuid.UUID(gate))
        assert job is not None
        group = JobGroup(
            kind="session",
            owner_id=job.owner_id,
            project_id=job.project_id,
            app="gate",
            version="1.0",
            entrypoint="main",
        )
        session.add(group)
        session.flush()
        session.execute(
            update(Job).where(Job.id.in_([uuid.UUID(gate), uuid.UUID(grouped)])).values(group_id=group.id)
        )
        session.execute(
            update(Job).where(Job.id == uuid.UUID(grouped)).values(state="cancelled")
        )  # (cancelled while it waited)
    for job_id in (source, made, grouped):
        _age(client, job_id, 100)
    settings.retention_jobs_days = 90

    first = retention.run(ctx.db, ctx.storage, settings, ctx.apps)
    assert _planned([i.to_json() for i in first.done]) == [("job", source)]
    assert first.kept_held == 2  # `made`: a queued job reads its output; `grouped`: its session runs
    assert client.get(f"/api/v1/jobs/{made}", headers=h).status_code == 200
    assert client.get(f"/api/v1/jobs/{grouped}", headers=h).status_code == 200
    (settings.jobs_dir / gate / "attempt-1" / "work" / "open").touch()
    assert wait_for_end(client, reads, h)["state"] == "succeeded"
    # the rerun still holds the content the deleted job read, and runs with it again
    again = client.post(f"/api/v1/jobs/{rerun.json()['id']}/rerun", headers=h)
    assert again.status_code == 201, again.text
    assert wait_for_end(client, again.json()["id"], h)["state"] == "succeeded"
    assert "first" in client.get(f"/api/v1/jobs/{again.json()['id']}/logs", headers=h).text

    second = retention.run(ctx.db, ctx.storage, settings, ctx.apps)
    assert _planned([i.to_json() for i in second.done]) == sorted([("job", made), ("job", grouped)])
    with ctx.db.session() as session:
        [key] = session.scalars(select(JobInput.blob_key).where(JobInput.job_id == uuid.UUID(reads)))
    assert ctx.storage.exists(key)  # the reader's copy of the deleted job's output stays
    [held] = client.get(f"/api/v1/jobs/{reads}/inputs", headers=h).json()
    content = client.get(held["url"], headers=h, follow_redirects=False)
    assert content.status_code == (307 if storage_backend == "s3" else 200)


def test_an_apps_policy_beats_the_installations(
    client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings, forever={"jobs_days": 0}, brief={"jobs_days": 1, "keep_last": 0})
    forever = _run(client, user, {"app": "forever"})
    brief = _run(client, user, {"app": "brief"})
    plain = _run(client, user, {"app": "maker"})
    _age(client, forever, 100)
    _age(client, brief, 2)
    _age(client, plain, 2)
    settings.retention_jobs_days, settings.retention_keep_last = 30, 5
    ctx = _ctx(client)
    dry = retention.run(ctx.db, ctx.storage, settings, ctx.apps, dry_run=True)
    assert _planned([i.to_json() for i in dry.done]) == [("job", brief)]
    real = retention.run(ctx.db, ctx.storage, settings, ctx.apps)
    assert _planned([i.to_json() for i in real.done]) == [("job", brief)]
    h = user.headers
    assert client.get(f"/api/v1/jobs/{brief}", headers=h).status_code == 404
    assert client.get(f"/api/v1/jobs/{forever}", headers=h).status_code == 200
    assert client.get(f"/api/v1/jobs/{plain}", headers=h).status_code == 200


def test_an_apps_retention_block_is_checked_naming_every_bad_key() -> None:
    text = json.dumps(
        {
            "name": "x",
            "versions": {"1.0": {"entrypoints": {"main": {"command": ["true"]}}}},
            "retention": {"jobs_days": -1, "keep_last": "many", "outputs_days": True, "folder_days": 3},
        }
    )
    result = parse_app(text, "x.yaml")
    assert result.spec is None
    said = "\n".join(p.message for p in result.problems)
    for key in ("retention.jobs_days", "retention.keep_last", "retention.outputs_days", "folder_days"):
        assert key in said, said
    assert "did you mean 'folders_days'" in said
    with pytest.raises(ValidationError) as bad:
        Settings(retention_jobs_days=-1, retention_keep_last=-2, retention_every_h=0)
    assert {e["loc"][0] for e in bad.value.errors()} == {
        "retention_jobs_days",
        "retention_keep_last",
        "retention_every_h",
    }
    fine = parse_app(
        text.replace(
            '"jobs_days": -1, "keep_last": "many", "outputs_days": true, "folder_days": 3', '"jobs_days": 7'
        ),
        "x.yaml",
    )
    assert fine.spec is not None and fine.spec.retention is not None and fine.spec.retention.jobs_days == 7


def test_scheduled_at_most_once_per_interval_and_leftover_folders_are_swept(
    client: TestClient, settings: Settings, user: Account
) -> None:
    ctx = _ctx(client)
    leftover = settings.jobs_dir / str(uuid.uuid4())  # a crash after a job's deletion committed
    (leftover / "attempt-1").mkdir(parents=True)
    long_ago = time.time() - 7200
    os.utime(leftover, (long_ago, long_ago))
    young = settings.jobs_dir / str(uuid.uuid4())
    young.mkdir()

    def runs() -> int:
        with ctx.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(RetentionRun)) or 0)

    assert housekeeping.run_once(ctx.db, ctx.storage, settings, apps=ctx.apps).problems == []
    assert runs() == 0 and leftover.exists()  # no policy: retention does nothing
    settings.retention_outputs_days = 30
    assert housekeeping.run_once(ctx.db, ctx.storage, settings, apps=ctx.apps).problems == []
    assert runs() == 1 and not leftover.exists() and young.exists()
    housekeeping.run_once(ctx.db, ctx.storage, settings, apps=ctx.apps)
    assert runs() == 1  # within retention_every_h
    with ctx.db.session() as session:
        session.execute(update(RetentionRun).values(started_at=datetime.now(UTC) - timedelta(hours=25)))
    housekeeping.run_once(ctx.db, ctx.storage, settings, apps=ctx.apps)
    assert runs() == 2


def test_the_dispatching_server_applies_retention_on_its_own(settings: Settings) -> None:
    settings.housekeeping_interval_s = 0.2
    settings.retention_every_h = 0.0001  # a run at most every 0.36 s
    settings.retention_jobs_days = 30
    with TestClient(create_app(settings)) as c:
        h = bearer(login(c, ADMIN_EMAIL, ADMIN_PASSWORD))
        write_app(settings.effective_apps_dir, "maker", MAKER, resources=SMALL)
        _ctx(c).apps.refresh(force=True)
        r = c.post("/api/v1/jobs", json={"app": "maker"}, headers=h)
        assert r.status_code == 201, r.text
        job_id = str(r.json()["id"])
        assert wait_for_end(c, job_id, h)["state"] == "succeeded"

        def runs() -> int:
            with _ctx(c).db.session() as session:
                return int(session.scalar(select(func.count()).select_from(RetentionRun)) or 0)

        seen = runs()
        eventually(lambda: runs() >= seen + 2, 30, "two more scheduled runs")  # that passed the young job
        assert c.get(f"/api/v1/jobs/{job_id}", headers=h).status_code == 200
        _age(c, job_id, 40)
        eventually(lambda: c.get(f"/api/v1/jobs/{job_id}", headers=h).status_code == 404, 30, "its deletion")
