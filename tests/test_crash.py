"""Nothing lost, nothing run twice: hundreds of short jobs while the server is killed (kill -9) at random
moments and started again, on SQLite and on PostgreSQL.

The ledger is each job's own log: the job prints "RUN <id>" as its first act, and a job's log collects
every run of every attempt (a second start of the command would print the line twice). Every job that
ever reached the database must end, its command must have run exactly once, and every job that succeeded
must have its output, whole.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobs_helpers import TERMINAL, py, write_app
from labcloud.settings import Settings
from live_server import eventually, login_headers
from restartable import Server, killable_server

ADMIN = ("ledger-admin@example.org", "ledger-admin-password")
JOBS = 200
KILLS = 4
LEDGER_APP = """
import os, sys, time
job = os.environ["LABCLOUD_JOB_ID"]
print("RUN", job, flush=True)
time.sleep(float(sys.argv[1]))
with open(os.path.join(os.environ["LABCLOUD_OUTPUT"], "result.txt"), "w") as f:
    f.write(job * 50)
print("DONE", job, flush=True)
"""


@pytest.fixture
def server(settings: Settings, database_url: str) -> Iterator[Server]:
    write_app(
        settings.effective_apps_dir,
        "ledger",
        [*py(LEDGER_APP), "{params.pause}"],
        parameters={"type": "object", "properties": {"pause": {"type": "number"}}, "required": ["pause"]},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
    )
    with killable_server(settings, database_url, ADMIN, local_cpus="2", scheduler_interval_s="0.2") as srv:
        yield srv


class Client:
    """Submits while the server comes and goes: a refused or unanswered request is sent again."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.headers: dict[str, str] = {}
        self.submitted = 0

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        while True:
            try:
                if not self.headers:
                    self.headers = login_headers(self.server.url, *ADMIN)
                r = httpx.request(method, self.server.url + path, headers=self.headers, timeout=10, **kwargs)
                if r.status_code < 500:
                    return r
            except (httpx.TransportError, AssertionError):
                pass
            time.sleep(0.05)

    def submit_all(self, rng: random.Random) -> None:
        for _ in range(JOBS):
            r = self.call(
                "POST", "/api/v1/jobs", json={"app": "ledger", "params": {"pause": rng.random() * 0.4}}
            )
            assert r.status_code == 201, r.text
            self.submitted += 1

    def all_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", "/api/v1/jobs", params=params).json()
            jobs += page["items"]
            if not (cursor := page.get("next_cursor")):
                return jobs


def test_kill_9_during_submits_and_runs_loses_nothing_and_runs_nothing_twice(server: Server) -> None:
    rng = random.Random(20261206)
    server.start()
    client = Client(server)
    submitter = threading.Thread(target=client.submit_all, args=(rng,), daemon=True)
    submitter.start()
    for _ in range(KILLS):
        # at a random moment of the flow: jobs are being submitted, staged, run and finished meanwhile
        time.sleep(0.5 + rng.random() * 2.5)
        server.kill()
        time.sleep(rng.random() * 0.5)
        server.start()
        client.headers = {}
    submitter.join(timeout=300)
    assert not submitter.is_alive() and client.submitted == JOBS

    def all_ended() -> list[dict[str, Any]] | None:
        jobs = client.all_jobs()
        return jobs if jobs and all(j["state"] in TERMINAL for j in jobs) else None

    try:
        jobs = eventually(all_ended, 240, "every job to end", interval=0.5)
    except AssertionError:
        stuck = Counter(j["state"] for j in client.all_jobs())
        raise AssertionError(f"jobs did not all end: {stuck}") from None
    # A submit whose answer the kill swallowed may have been stored: it is a job like the others.
    assert len(jobs) >= JOBS
    runs: dict[str, int] = {}
    problems = []
    for job in jobs:
        log = client.call("GET", f"/api/v1/jobs/{job['id']}/logs").text
        runs[job["id"]] = log.count(f"RUN {job['id']}\n")
        if job["state"] != "succeeded":
            problems.append(f"{job['id']}: {job['state']} {job['reason']} {job['message']}")
            continue
        outputs = client.call("GET", f"/api/v1/jobs/{job['id']}/outputs").json()
        if [o["path"] for o in outputs] != ["result.txt"]:
            problems.append(f"{job['id']}: outputs {outputs}")
            continue
        data = client.call("GET", f"/api/v1/jobs/{job['id']}/outputs/result.txt").text
        if data != job["id"] * 50:
            problems.append(f"{job['id']}: result.txt holds {len(data)} characters")
    twice = {job_id: n for job_id, n in runs.items() if n != 1}
    assert not twice, f"commands that did not run exactly once: {twice}"
    assert not problems, "\n".join(problems)
    attempts = Counter(j["attempts"] for j in jobs)
    print(f"{len(jobs)} jobs, {KILLS} kills: attempts {dict(attempts)}")
