"""Several ``labcloud serve`` replicas on one database: all answer the API, exactly one dispatches, and
when that one dies another takes over and the work goes on (real processes; SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import backend
from jobs_helpers import TERMINAL, py, write_app
from live_server import Popen, eventually, login_headers, server_env, start_server, stop_server

ADMIN = ("leader-admin@example.org", "leader-admin-password")


class Replicas:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, Popen] = {}

    def start(self, name: str) -> str:
        url, proc = start_server(self.env, self.logs / f"{name}.log")
        self.procs[url] = proc
        return url

    def leaders(self) -> list[str]:
        """The replicas that say they dispatch (the dead ones say nothing)."""
        found = []
        for url, proc in self.procs.items():
            if proc.poll() is None and httpx.get(f"{url}/readyz", timeout=5).json()["dispatching"]:
                found.append(url)
        return found

    def kill(self, url: str) -> None:
        proc = self.procs[url]
        os.kill(proc.pid, signal.SIGKILL)  # no goodbye: its connection (or file lock) just goes away
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                stop_server(proc)


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, settings: Any, database_url: str, tmp_path: Path
) -> Iterator[Replicas]:
    """Replicas sharing the database and the data dir (one machine here; a shared disk in production)."""
    write_app(
        settings.effective_apps_dir,
        "nap",
        py("""
        import os, time
        print("be" + "gin", flush=True)  # (the log's command line does not hold the word it prints)
        time.sleep(float(os.environ.get("LABCLOUD_PARAM_SECONDS", "0")))
        print("e" + "nd", flush=True)
    """),
        parameters={"type": "object", "properties": {"seconds": {"type": "number", "default": 0}}},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    url = database_url if backend() == "postgresql" else None
    env = server_env(settings.home, ADMIN, url, leader_check_interval_s="0.5")
    env |= getattr(request, "param", {})
    group = Replicas(env, tmp_path)
    try:
        yield group
    finally:
        group.stop()


def _headers(url: str) -> dict[str, str]:
    return login_headers(url, *ADMIN)


def _submit(url: str, headers: dict[str, str], seconds: float) -> str:
    r = httpx.post(f"{url}/api/v1/jobs", json={"app": "nap", "params": {"seconds": seconds}}, headers=headers)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


def _job(url: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()
    return job


def _wait_end(url: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    return eventually(
        lambda: (j := _job(url, headers, job_id))["state"] in TERMINAL and j, 60, f"job {job_id} to end"
    )


def _log(url: str, headers: dict[str, str], job_id: str) -> str:
    return httpx.get(f"{url}/api/v1/jobs/{job_id}/logs", headers=headers).text


def test_one_replica_dispatches_and_another_takes_over_when_it_dies(replicas: Replicas) -> None:
    first = replicas.start("first")
    second = replicas.start("second")
    assert replicas.leaders() == [first]  # the first to start leads; the other only serves the API
    headers = _headers(second)

    # a job submitted through the follower is run by the leader
    quick = _submit(second, headers, 0)
    done = _wait_end(second, headers, quick)
    assert done["state"] == "succeeded", done

    # the leader dies while a job it started is running
    running = _submit(second, headers, 3)
    eventually(lambda: _job(second, headers, running)["state"] == "running", 60, "the long job to start")
    # its own first line: its command runs (a leader killed between "running" and the command's start
    # leaves nothing to follow, and the job rightly runs again as a second attempt)
    eventually(lambda: "\nbegin\n" in _log(second, headers, running), 30, "the long job's first line")
    replicas.kill(first)
    assert eventually(lambda: replicas.leaders() == [second], 30, "the second replica to take over")

    # the new leader follows the job the old one started, and dispatches new work
    after = _submit(second, headers, 0)
    for job_id in (running, after):
        end = _wait_end(second, headers, job_id)
        assert end["state"] == "succeeded" and end["attempts"] == 1, end
    log = _log(second, headers, running)
    assert "\nbegin\n" in log and "\nend\n" in log, log

    # a replica started later waits its turn
    third = replicas.start("third")
    assert replicas.leaders() == [second]
    assert _job(third, headers, after)["state"] == "succeeded"


@pytest.mark.postgresql_only
@pytest.mark.parametrize("replicas", [{"LABCLOUD_SCHEDULER_INTERVAL_S": "600"}], indirect=True)
def test_a_job_submitted_to_a_follower_wakes_the_leader(replicas: Replicas) -> None:
    # The leader's scheduler only looks on its own every 10 minutes here: the job can start sooner only
    # because the follower's submit reached the leader as a wake-up (PostgreSQL NOTIFY).
    leader = replicas.start("leader")
    follower = replicas.start("follower")
    assert replicas.leaders() == [leader]
    headers = _headers(follower)
    for _ in range(3):
        job_id = _submit(follower, headers, 0)
        end = _wait_end(follower, headers, job_id)
        assert end["state"] == "succeeded", end
