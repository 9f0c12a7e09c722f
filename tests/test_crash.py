"""Nothing lost, nothing run twice: hundreds of short jobs while the server is killed (kill -9) at random
moments and started again, on SQLite and on PostgreSQL (the experiment is :mod:`testing.crash`, which the
benchmarks run too).

Every job that ever reached the database must end, its command must have run exactly once (the job's log
is the ledger), and every job must have succeeded with its output, whole.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import backend
from jobs_helpers import write_app
from labcloud.execution import process
from labcloud.settings import Settings
from live_server import eventually, server_env
from testing import crash

ADMIN = ("ledger-admin@example.org", "ledger-admin-password")
JOBS = 200
KILLS = 4


@pytest.fixture
def server(settings: Settings, database_url: str) -> Iterator[crash.KillableServer]:
    crash.write_ledger_app(settings.effective_apps_dir)
    url = database_url if backend() == "postgresql" else None
    env = server_env(settings.home, ADMIN, url, local_cpus="2", scheduler_interval_s="0.2")
    srv = crash.KillableServer(env)
    try:
        yield srv
    finally:
        srv.stop()


def test_kill_9_during_submits_and_runs_loses_nothing_and_runs_nothing_twice(
    server: crash.KillableServer,
) -> None:
    account = crash.run(server, ADMIN, jobs=JOBS, kills=KILLS, seed=20261206)
    assert account.submitted == JOBS
    assert not account.missing, f"acknowledged submits (201) the server lost: {account.missing}"
    assert not account.stuck, f"jobs that never ended: {dict(account.stuck)}"
    # A submit whose answer the kill swallowed may have been stored: it is a job like the others.
    assert account.jobs >= JOBS
    assert not account.ran_twice, f"commands that did not run exactly once: {account.ran_twice}"
    assert not account.problems, "\n".join(account.problems)
    print(f"{account.jobs} jobs, {KILLS} kills, {account.seconds:.0f} s: attempts {dict(account.attempts)}")


# --- two moments, made to happen: a kill right after a supervisor starts, and one while outputs are stored -

GATED_APP = "gated"
# Prints the ledger line, waits for the test to open its gate (a file in its own folder), then writes its
# outputs: PARTS files, each made of its job id and number.
GATED_SCRIPT = """
import os, sys, time
job = os.environ["LABCLOUD_JOB_ID"]
print("RUN", job, flush=True)
while not os.path.exists(os.path.join(os.environ["HOME"], "gate")):
    time.sleep(0.02)
for i in range(int(sys.argv[1])):
    with open(os.path.join(os.environ["LABCLOUD_OUTPUT"], "part-%03d.txt" % i), "w") as f:
        f.write(("%s:%d\\n" % (job, i)) * 100)
print("DONE", job, flush=True)
"""
PARTS = 12


def write_gated_app(apps_dir: Path) -> None:
    write_app(
        apps_dir,
        GATED_APP,
        ["python", "-c", GATED_SCRIPT, "{params.parts}"],
        parameters={"type": "object", "properties": {"parts": {"type": "integer"}}, "required": ["parts"]},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 300},
    )


@pytest.fixture
def gated(settings: Settings, database_url: str) -> Iterator[crash.KillableServer]:
    write_gated_app(settings.effective_apps_dir)
    url = database_url if backend() == "postgresql" else None
    srv = crash.KillableServer(server_env(settings.home, ADMIN, url, scheduler_interval_s="0.2"))
    try:
        yield srv
    finally:
        srv.stop()


def _client(server: crash.KillableServer) -> httpx.Client:
    r = httpx.post(f"{server.url}/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200, r.text
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {r.json()['access_token']}"}, timeout=30
    )


def _assert_ran_once_whole(server: crash.KillableServer, job_id: str, parts: int) -> None:
    """After the restart: the job ends succeeded, in its first attempt, run once, every output whole."""
    with _client(server) as http:

        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["state"] in crash.TERMINAL else None

        job = eventually(ended, 120, "the job to end after the restart")
        log = http.get(f"/api/v1/jobs/{job_id}/logs").text
        assert job["state"] == "succeeded", (job, log)
        assert job["attempts"] == 1, (job, log)  # followed again, never started a second time
        assert log.count(f"RUN {job_id}\n") == 1 and log.count(f"DONE {job_id}\n") == 1, log
        outputs = http.get(f"/api/v1/jobs/{job_id}/outputs").json()
        assert sorted(o["path"] for o in outputs) == [f"part-{i:03d}.txt" for i in range(parts)], outputs
        for i in range(parts):
            data = http.get(f"/api/v1/jobs/{job_id}/outputs/part-{i:03d}.txt").text
            assert data == f"{job_id}:{i}\n" * 100, (i, len(data))


def _submit(server: crash.KillableServer, parts: int) -> str:
    with _client(server) as http:
        r = http.post("/api/v1/jobs", json={"app": GATED_APP, "params": {"parts": parts}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_a_server_killed_right_after_starting_a_supervisor_follows_it_again(
    gated: crash.KillableServer, settings: Settings
) -> None:
    """No handle of a local job's supervisor is kept in the database: a restarted server finds the running
    one by the lock it holds on the attempt's folder. Killed the moment the supervisor has written its
    identity (the job may not even have started yet), the server follows it again after its restart."""
    gated.start()
    job_id = _submit(gated, 1)
    attempt = settings.home / "jobs" / job_id / "attempt-1"
    eventually(lambda: (attempt / "handle.json").exists(), 60, "the supervisor to start", interval=0.002)
    gated.kill()
    supervisor = process.find_supervisor(attempt / "status.json", wait_s=5)
    assert supervisor is not None and process.is_alive(supervisor)  # it outlived the server
    gated.start()
    (attempt / "work" / "gate").write_text("open")
    _assert_ran_once_whole(gated, job_id, 1)


def test_a_server_killed_while_storing_outputs_finishes_the_job_whole(
    gated: crash.KillableServer, settings: Settings
) -> None:
    """Killed in ``finishing`` with part of the outputs stored (each blob's rename into the store is slowed
    down by strace, so the kill falls between two of them): the restarted server collects them again, and
    the job ends succeeded with all its outputs whole, having run once."""
    gated.start()
    job_id = _submit(gated, PARTS)
    attempt = settings.home / "jobs" / job_id / "attempt-1"
    eventually(lambda: (attempt / "handle.json").exists(), 60, "the job to start")
    assert gated.proc is not None
    server_pid = gated.proc.pid
    renames = "rename,renameat,renameat2"
    tracer = subprocess.Popen(
        [
            *("strace", "-f", "-qq", "-o", "/dev/null", "-p", str(server_pid)),
            *("-e", f"trace={renames}", "-e", f"inject={renames}:delay_enter=400000"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        eventually(lambda: _traced(server_pid, tracer.pid), 30, "strace to attach to every thread")
        blobs = settings.files_dir

        def stored() -> int:
            return sum(1 for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else 0

        (attempt / "work" / "gate").write_text("open")
        eventually(lambda: stored() >= 1, 60, "the first output to be stored", interval=0.005)
        gated.kill()
    finally:
        tracer.kill()
        tracer.wait()
    kept = stored()
    assert 1 <= kept < PARTS, f"{kept} of {PARTS} outputs stored when the server was killed"
    gated.start()
    _assert_ran_once_whole(gated, job_id, PARTS)


def _traced(pid: int, tracer: int) -> bool:
    """Every thread of ``pid`` is traced by ``tracer``."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        status = (task / "status").read_text()
        if f"TracerPid:\t{tracer}\n" not in status:
            return False
    return bool(tasks)
