"""Dispatch fairness, the registry seen through the API, and restarts of the server mid-job."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, backend, bearer, login
from jobs_helpers import TERMINAL, follow_log, py, wait_for_end, write_app
from labcloud.api.app import create_app
from labcloud.db.engine import Database
from labcloud.db.models import Job, UsageRecord, User
from labcloud.db.models.jobs import WAITING_CLAUSE
from labcloud.db.types import utcnow
from labcloud.execution.executors.base import Executor
from labcloud.execution.process import Handle
from labcloud.execution.scheduler import Scheduler, owners_waiting
from labcloud.registry.spec_parts import Resources
from labcloud.services import lifecycle, projects
from labcloud.services.job_states import JobState
from labcloud.settings import Settings
from live_server import eventually, login_headers, server_env
from testing.crash import KillableServer


def _one_cpu_gate_and_nap(settings: Settings, nap: list[str]) -> None:
    """One CPU, and two apps that each take it: ``gate`` runs until a file ``open`` appears in its work
    folder, ``nap`` runs ``nap``."""
    settings.local_cpus = 1  # one job at a time
    resources = {"cpus": 1, "memory_mb": 32, "timeout_s": 60}
    write_app(settings.effective_apps_dir, "nap", nap, resources=resources)
    write_app(
        settings.effective_apps_dir,
        "gate",
        ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"],
        resources=resources,
    )


def test_one_users_many_jobs_do_not_starve_anothers_one(settings: Settings) -> None:
    """Alice's first job holds the only CPU until the test opens its gate; by then alice has three more
    jobs waiting and bob one. Bob's must run next: how fast the submissions arrive does not matter."""
    _one_cpu_gate_and_nap(settings, ["sleep", "0.2"])
    with TestClient(create_app(settings)) as client:
        admin = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        heads = {}
        for name in ("alice", "bob"):
            client.post(
                "/api/v1/users",
                json={"email": f"{name}@example.org", "password": "pass-word-123"},
                headers=admin,
            )
            heads[name] = bearer(login(client, f"{name}@example.org", "pass-word-123"))
        gate = client.post("/api/v1/jobs", json={"app": "gate"}, headers=heads["alice"]).json()["id"]
        eventually(
            lambda: client.get(f"/api/v1/jobs/{gate}", headers=heads["alice"]).json()["state"] == "running",
            30,
            "the gate job to run",
        )
        alice_jobs = [
            client.post("/api/v1/jobs", json={"app": "nap"}, headers=heads["alice"]).json()["id"]
            for _ in range(3)
        ]
        bob_job = client.post("/api/v1/jobs", json={"app": "nap"}, headers=heads["bob"]).json()["id"]
        (settings.home / "jobs" / gate / "attempt-1" / "work" / "open").touch()
        done = {j: wait_for_end(client, j, heads["alice"]) for j in [gate, *alice_jobs]}
        bob = wait_for_end(client, bob_job, heads["bob"])
    assert all(j["state"] == "succeeded" for j in [*done.values(), bob])
    started = sorted([(datetime.fromisoformat(j["started_at"]), j["id"]) for j in [*done.values(), bob]])
    order = [job_id for _, job_id in started]
    assert order[0] == gate
    assert order[1] == bob_job, "bob's one job waited behind alice's queue"


def test_a_queued_job_starts_as_soon_as_the_running_one_ends(settings: Settings) -> None:
    """The only CPU is held by a job waiting for its gate; a second job waits for capacity. The dispatcher's
    own rounds are a minute apart, so the second job starting within seconds of the gate opening is the
    wake-up the local executor sends when the first job has ended and given its CPU back."""
    _one_cpu_gate_and_nap(settings, ["true"])
    settings.scheduler_interval_s = 60.0
    with TestClient(create_app(settings)) as client:
        admin = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))

        def state(job_id: str) -> str:
            return str(client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()["state"])

        gate = client.post("/api/v1/jobs", json={"app": "gate"}, headers=admin).json()["id"]
        eventually(lambda: state(gate) == "running", 30, "the gate job to run")
        waiting = client.post("/api/v1/jobs", json={"app": "nap"}, headers=admin).json()["id"]
        reason = client.get(f"/api/v1/jobs/{waiting}", headers=admin).json()["message"]
        assert state(waiting) == "queued" and "waiting for capacity" in reason, reason
        listed = {j["id"]: j["message"] for j in client.get("/api/v1/jobs", headers=admin).json()["items"]}
        assert listed[waiting] == reason, "the listing says why it waits as the job's own page does"
        (settings.home / "jobs" / gate / "attempt-1" / "work" / "open").touch()
        eventually(lambda: state(gate) == "succeeded", 30, "the gate job to end")
        eventually(lambda: state(waiting) == "succeeded", 20, "the waiting job to start and end")


def _queue_one_each(
    db: Database, people: list[Account], executor: str
) -> list[tuple[Account, tuple[Any, Any]]]:
    """A queued job for each person in their personal project, for ``executor``: (person, (job id,
    project id))."""
    found = []
    with db.session() as session:
        for who in people:
            person = session.get(User, who.id)
            assert person is not None
            project = projects.personal(session, person)
            job = Job(
                owner_id=who.id,
                project_id=project.id,
                app="nap",
                version="1",
                entrypoint="main",
                spec={},
                spec_hash="-",
                params={},
                inputs={},
                env={},
                tags={},
                resources=Resources(cpus=1, memory_mb=32),
                executor=executor,
            )
            session.add(job)
            session.flush()
            found.append((who, (job.id, project.id)))
    return found


class _FreesMidRound:
    """An executor with room for one job, held until the first time a job is found not to fit: then the job
    holding it ends, between that check and the next one (the moment a real dispatcher can hit)."""

    name = "mid-round"
    dispatched = True
    submit_lot = 0

    def __init__(self) -> None:
        self.full = True
        self.started: list[uuid.UUID] = []

    def fits_now(self, resources: Resources) -> bool:
        if self.full and not self.started:
            self.full = False  # the running job ends right after this answer
            return False
        return not self.started and not self.full

    def admit(self, session: Session, job: Job) -> None:
        lifecycle.transition(session, job, JobState.STAGING, attempts=job.attempts + 1)

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        self.started.append(job_id)

    def running_per_owner(self) -> dict[uuid.UUID, int]:
        return {}


def test_room_freed_during_a_round_goes_to_the_first_in_line(
    client: TestClient, settings: Settings, make_user: Any
) -> None:
    """Bob is first in line (alice was served last); his job is checked while the room is still taken, and
    the room frees before alice's is checked. The room is bob's: the round starts again instead of handing
    it to alice."""
    alice, bob = make_user("alice@example.org"), make_user("bob@example.org")
    db = Database(settings)
    ids = {who.email: job_id for who, (job_id, _) in _queue_one_each(db, [alice, bob], _FreesMidRound.name)}
    executor = _FreesMidRound()
    scheduler = Scheduler(db, cast(Executor, executor))
    scheduler._last_served[alice.id] = time.monotonic()  # alice had the last turn
    assert scheduler.dispatch() == 1
    assert executor.started == [ids[bob.email]], "the freed room went to the user behind in line"
    db.dispose()


class _OneSlot(_FreesMidRound):
    """Room for one job, free from the start."""

    name = "one-slot"

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def fits_now(self, resources: Resources) -> bool:
        return not self.started


def test_the_project_that_used_least_lately_goes_first(
    client: TestClient, settings: Settings, make_user: Any
) -> None:
    """Bob was served a moment ago and alice not at all, but alice's project used ten CPU-hours yesterday
    and bob's nothing: with fair share bob's job takes the one free slot; without it, alice's would."""
    alice, bob = make_user("alice@example.org"), make_user("bob@example.org")
    db = Database(settings)
    ids = {who.email: found for who, found in _queue_one_each(db, [alice, bob], _OneSlot.name)}
    with db.session() as session:
        session.add(
            UsageRecord(
                job_id=uuid.uuid4(),
                attempt=1,
                project_id=ids[alice.email][1],
                user_id=alice.id,
                app="nap",
                version="1",
                executor="local",
                state="succeeded",
                cpus=10,
                gpus=0,
                wall_s=3600,
                cpu_hours=10,
                gpu_hours=0,
                peak_memory_mb=1,
                finished_at=utcnow() - timedelta(days=1),
            )
        )
    for half_life_h, first in ((168.0, bob), (0.0, alice)):
        executor = _OneSlot()
        scheduler = Scheduler(db, cast(Executor, executor), half_life_h=half_life_h)
        scheduler._last_served[bob.id] = time.monotonic()  # bob had the last turn
        with db.session() as session:  # (both queued again for the second round)
            for job_id, _ in ids.values():
                session.execute(sa_update(Job).where(Job.id == job_id).values(state="queued", attempts=0))
        assert scheduler.dispatch() == 1
        assert executor.started == [ids[first.email][0]], f"half-life {half_life_h}: wrong job first"
    db.dispose()


def test_the_line_is_each_users_oldest_waiting_job_found_by_index_seeks(
    client: TestClient, settings: Settings, make_user: Any
) -> None:
    """Alice has three jobs waiting, bob one waiting and one already staged, carol only jobs of another
    executor: the line is alice's oldest and bob's waiting one. Who waits is found by skipping from one
    owner to the next (an index seek each), not by reading every queued job's row."""
    alice, bob, carol = (make_user(f"{n}@example.org") for n in ("alice", "bob", "carol"))
    db = Database(settings)
    alice_jobs = [_queue_one_each(db, [alice], _OneSlot.name)[0][1][0] for _ in range(3)]
    bob_staged, bob_waiting = (_queue_one_each(db, [bob], _OneSlot.name)[0][1][0] for _ in range(2))
    _queue_one_each(db, [carol, carol], "elsewhere")
    with db.session() as session:
        session.execute(sa_update(Job).where(Job.id == bob_staged).values(state="staging", attempts=1))
    scheduler = Scheduler(db, cast(Executor, _OneSlot()))
    line = {job_id: owner for owner, job_id, _ in scheduler._candidates()}
    assert line == {alice_jobs[0]: alice.id, bob_waiting: bob.id}
    assert scheduler.dispatch() == 1

    owners = owners_waiting((WAITING_CLAUSE, Job.executor == _OneSlot.name))
    sql = str(owners.compile(db.engine, compile_kwargs={"literal_binds": True}))
    if backend() == "postgresql":
        # Its planner weighs the table: with 20,000 waiting it walks an index in owner order (this one, or
        # the owner index when every job waits), never the table or a sort of it.
        columns = ", ".join(c.name for c in Job.__table__.columns if c.name != "id")
        with db.session() as session:
            session.execute(
                text(
                    f"INSERT INTO jobs (id, {columns}) SELECT gen_random_uuid(), {columns} "
                    "FROM jobs, generate_series(1, 20000) WHERE jobs.id = :id"
                ),
                {"id": alice_jobs[1]},
            )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE jobs"))
            plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {sql}")))
        assert "Index" in plan and "Seq Scan" not in plan and "Sort" not in plan, plan
    else:
        with db.session() as session:
            plan = "\n".join(str(row[-1]) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
        assert "ix_jobs_waiting_executor_owner_id_id" in plan, plan
    db.dispose()


def test_registry_changes_show_without_restart(
    client: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    apps_dir = settings.effective_apps_dir
    write_app(apps_dir, "fresh", ["echo", "v1"])
    names = [a["name"] for a in client.get("/api/v1/apps", headers=user.headers).json()["items"]]
    assert "fresh" in names
    good = (apps_dir / "fresh.yaml").read_text()
    (apps_dir / "fresh.yaml").write_text("name: fresh\nversions:\n  '1.0':\n    entrypoints: [oops\n")
    body = client.get("/api/v1/apps", headers=admin.headers).json()
    problems = [p for p in body["problems"] if p["path"].endswith("fresh.yaml")]
    assert problems and problems[0]["line"] is not None and problems[0]["message"]
    assert "fresh" in [a["name"] for a in body["items"]]  # the last good version is still served
    job = client.post("/api/v1/jobs", json={"app": "fresh"}, headers=user.headers).json()
    assert wait_for_end(client, job["id"], user.headers)["state"] == "succeeded"
    assert "v1" in client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    (apps_dir / "fresh.yaml").write_text(good.replace("v1", "v2"))
    (apps_dir / "fresh.yaml").unlink()
    names = [a["name"] for a in client.get("/api/v1/apps", headers=user.headers).json()["items"]]
    assert "fresh" not in names


# --------------------------------------------------------------------------------- restarts (kill -9)

ADMIN = ("crash-admin@example.org", "crash-admin-password")


@pytest.fixture
def server(settings: Settings, database_url: str) -> Iterator[KillableServer]:
    srv = KillableServer(
        server_env(settings.home, ADMIN, database_url if backend() == "postgresql" else None)
    )
    try:
        yield srv
    finally:
        srv.stop()


def _token(srv: KillableServer) -> dict[str, str]:
    return login_headers(srv.url, *ADMIN)


def _wait_for_line(srv: KillableServer, job_id: str, headers: dict[str, str], text: str) -> None:
    with httpx.stream(
        "GET", f"{srv.url}/api/v1/jobs/{job_id}/logs", params={"follow": "true"}, headers=headers, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line == f"data: {text}":  # a whole line the app printed, not the echoed command
                return
    raise AssertionError(f"{text!r} never appeared in the log of {job_id}")


def _wait_for_end(srv: KillableServer, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    with httpx.stream(
        "GET", f"{srv.url}/api/v1/jobs/{job_id}/logs", params={"follow": "true"}, headers=headers, timeout=120
    ) as r:
        for line in r.iter_lines():
            if line.startswith("event: end"):
                break
    job: dict[str, Any] = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=headers).json()
    assert job["state"] in TERMINAL
    return job


def test_a_job_survives_kill_9_of_the_server(server: KillableServer, settings: Settings) -> None:
    write_app(
        settings.effective_apps_dir,
        "nap",
        py("""
        import time
        print("begin", flush=True)
        time.sleep(2)
        print("end", flush=True)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    server.start()
    headers = _token(server)
    job_id = httpx.post(f"{server.url}/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
    _wait_for_line(server, job_id, headers, "begin")
    server.kill()
    server.start()  # re-attaches to the job's process, which kept running
    headers = _token(server)
    job = _wait_for_end(server, job_id, headers)
    assert job["state"] == "succeeded" and job["attempts"] == 1, job
    log = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/logs", headers=headers).text
    assert "begin" in log and "end" in log


def test_a_job_whose_process_died_with_the_server_is_retried(
    server: KillableServer, settings: Settings
) -> None:
    write_app(
        settings.effective_apps_dir,
        "nap",
        py("""
        import time
        print("begin", flush=True)
        time.sleep(1)
        print("end", flush=True)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    server.start()
    headers = _token(server)
    job_id = httpx.post(f"{server.url}/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
    _wait_for_line(server, job_id, headers, "begin")
    server.kill()
    handle = Handle.from_json((settings.home / "jobs" / job_id / "attempt-1" / "handle.json").read_text())
    os.kill(handle.pid, signal.SIGKILL)  # the machine "lost" the job along with the server
    server.start()
    headers = _token(server)
    job = _wait_for_end(server, job_id, headers)
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    history = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/events", headers=headers).json()
    lost = [e for e in history if e["reason"] == "worker_lost"]
    assert len(lost) == 1 and history[history.index(lost[0]) + 1]["to_state"] == "queued"


def _write_nap(settings: Settings) -> None:
    """An app that prints "begin", sleeps 1.5 s and prints "end"."""
    write_app(
        settings.effective_apps_dir,
        "nap",
        py("""
        import time
        print("begin", flush=True)
        time.sleep(1.5)
        print("end", flush=True)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )


def test_a_stopping_server_lets_go_of_its_jobs_and_the_next_takes_them_up(settings: Settings) -> None:
    """A server that stops leading stops following its jobs at once, writing nothing more about them (their
    supervisors run on); the next server takes them up where they are."""
    _write_nap(settings)
    with TestClient(create_app(settings)) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        job_id = client.post("/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
        assert "begin" in follow_log(client, job_id, headers, until="begin")
    status = settings.home / "jobs" / job_id / "attempt-1" / "status.json"
    eventually(status.exists, 30, "the job to end while no server follows it")
    with TestClient(create_app(settings, dispatch=False)) as client:  # looks, takes nothing up
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        seen = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        assert seen["state"] == "running", seen  # nobody wrote its end: the stopped server let go
    with TestClient(create_app(settings)) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        done = wait_for_end(client, job_id, headers)
        assert done["state"] == "succeeded" and done["attempts"] == 1, done
        log = client.get(f"/api/v1/jobs/{job_id}/logs", headers=headers).text
        assert log.count("begin\n") == 1 and "end\n" in log


def test_a_server_that_leads_again_follows_its_jobs_again(settings: Settings) -> None:
    """A server that loses its hold on the leader lock (its database connection dropped) lets go of its jobs;
    when it wins the lock back it takes them up and follows them to their end."""
    _write_nap(settings)
    settings.leader_check_interval_s = 0.2
    with TestClient(create_app(settings)) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        job_id = client.post("/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
        assert "begin" in follow_log(client, job_id, headers, until="begin")
        leadership = client.app.state.ctx.leadership  # type: ignore[attr-defined]
        leadership._resign("its connection to the database was lost")
        eventually(lambda: leadership.is_leader, 30, "this server to lead again")
        done = eventually(
            lambda: (
                (job := client.get(f"/api/v1/jobs/{job_id}", headers=headers).json())["state"] in TERMINAL
                and job
            ),
            30,
            "the job to end",
        )
        assert done["state"] == "succeeded" and done["attempts"] == 1, done
