"""The crash experiment of the tests and the benchmarks: many short jobs while ``labcloud serve`` is killed
(SIGKILL) at random moments and started again, then an account of every job that reached the database.

The ledger is each job's own log: the job prints "RUN <id>" as its first act, and a job's log collects
every run of every attempt, so a command started twice shows the line twice. Nothing but the server's
HTTP API is used to take the account.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from testing.daemons import clean_env, free_port

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
LEDGER_APP = "ledger"
LEDGER_SCRIPT = """
import os, sys, time
job = os.environ["LABCLOUD_JOB_ID"]
print("RUN", job, flush=True)
time.sleep(float(sys.argv[1]))
with open(os.path.join(os.environ["LABCLOUD_OUTPUT"], "result.txt"), "w") as f:
    f.write(job * 50)
print("DONE", job, flush=True)
"""


def write_ledger_app(apps_dir: Path) -> None:
    """The app every job of the experiment runs (JSON is YAML)."""
    import json

    apps_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": LEDGER_APP,
        "title": "ledger",
        "versions": {
            "1.0": {
                "entrypoints": {
                    "main": {
                        "description": "prints RUN <job id>, naps, writes its output",
                        "command": ["python", "-c", LEDGER_SCRIPT, "{params.pause}"],
                        "parameters": {
                            "type": "object",
                            "properties": {"pause": {"type": "number"}},
                            "required": ["pause"],
                        },
                        "resources": {"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
                    }
                }
            }
        },
    }
    (apps_dir / f"{LEDGER_APP}.yaml").write_text(json.dumps(spec))


class KillableServer:
    """``labcloud serve`` on a fixed port and data dir, killed with SIGKILL and started again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**clean_env(), **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labcloud.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:  # one client: a new one per poll costs ~20 ms of CPU
            while time.monotonic() < deadline:
                try:
                    if http.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError("labcloud serve exited")
                time.sleep(0.05)
        raise RuntimeError("labcloud serve did not become ready")

    def kill(self) -> None:
        """kill -9 of the server and its process group (job supervisors live in sessions of their own)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class Client:
    """Talks to a server that comes and goes: a refused or unanswered request is sent again.

    Through one HTTP client (a connection the kill broke fails, and the request is sent again on a new one):
    a client per request would load the CA certificates each time, some 20 ms of CPU a request."""

    def __init__(self, server: KillableServer, admin: tuple[str, str]) -> None:
        self.server = server
        self.admin = admin
        self.headers: dict[str, str] = {}
        self.submitted = 0
        self.acknowledged: list[str] = []  # the ids of the submits the server answered 201
        self.http = httpx.Client(timeout=10)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        while True:
            try:
                if not self.headers:
                    r = self.http.post(
                        self.server.url + "/api/v1/auth/login",
                        data={"username": self.admin[0], "password": self.admin[1]},
                    )
                    if r.status_code != 200:
                        raise httpx.TransportError(f"login answered {r.status_code}")
                    self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
                r = self.http.request(method, self.server.url + path, headers=self.headers, **kwargs)
                if r.status_code < 500:
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def submit_all(self, jobs: int, rng: random.Random, pause_s: float) -> None:
        for _ in range(jobs):
            body = {"app": LEDGER_APP, "params": {"pause": rng.random() * pause_s}}
            r = self.call("POST", "/api/v1/jobs", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"submit answered {r.status_code}: {r.text}")
            self.submitted += 1
            self.acknowledged.append(str(r.json()["id"]))

    def all_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", "/api/v1/jobs", params=params).json()
            jobs += page["items"]
            if not (cursor := page.get("next_cursor")):
                return jobs


@dataclass
class Account:
    """What became of every job that reached the database."""

    jobs: int = 0
    submitted: int = 0
    kills: int = 0
    ran_twice: dict[str, int] = field(default_factory=dict)  # job id -> runs, for any job not run once
    missing: list[str] = field(default_factory=list)  # acknowledged submits (201) the server does not list
    stuck: Counter[str] = field(default_factory=Counter)  # states of jobs that never ended
    problems: list[str] = field(default_factory=list)  # jobs that did not succeed whole
    attempts: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return (
            not (self.ran_twice or self.stuck or self.problems or self.missing)
            and self.jobs >= self.submitted
        )


def run(
    server: KillableServer,
    admin: tuple[str, str],
    *,
    jobs: int,
    kills: int,
    seed: int,
    pause_s: float = 0.4,
    end_timeout_s: float = 240,
) -> Account:
    """Start the server, submit ``jobs`` jobs while killing it ``kills`` times at random moments, wait for
    every job to end (or the timeout), and take the account."""
    started = time.monotonic()
    server.start()
    with contextlib.closing(Client(server, admin)) as client:
        _submit_while_killing(server, client, jobs, kills, seed, pause_s)
        account = _take_account(client, kills, end_timeout_s)
    account.seconds = time.monotonic() - started
    return account


def _submit_while_killing(
    server: KillableServer, client: Client, jobs: int, kills: int, seed: int, pause_s: float
) -> None:
    rng = random.Random(seed)
    failure: list[BaseException] = []

    def submit() -> None:
        try:
            client.submit_all(jobs, rng, pause_s)
        except BaseException as exc:
            failure.append(exc)

    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()
    kill_rng = random.Random(seed + 1)
    for _ in range(kills):
        # at a random moment of the flow: jobs are being submitted, staged, run and finished meanwhile
        time.sleep(0.5 + kill_rng.random() * 2.5)
        server.kill()
        time.sleep(kill_rng.random() * 0.5)
        server.start()
        client.headers = {}
    submitter.join(timeout=600)
    if failure:
        raise failure[0]


def _take_account(client: Client, kills: int, end_timeout_s: float) -> Account:
    account = Account(submitted=client.submitted, kills=kills)
    deadline = time.monotonic() + end_timeout_s
    while True:
        listed = client.all_jobs()
        if all(j["state"] in TERMINAL for j in listed) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    account.jobs = len(listed)
    known = {str(j["id"]) for j in listed}
    account.missing = [job_id for job_id in client.acknowledged if job_id not in known]
    account.stuck = Counter(j["state"] for j in listed if j["state"] not in TERMINAL)
    for job in listed:
        account.attempts[job["attempts"]] += 1
        log = client.call("GET", f"/api/v1/jobs/{job['id']}/logs").text
        runs = log.count(f"RUN {job['id']}\n")
        if runs != 1 and job["state"] in TERMINAL:
            account.ran_twice[job["id"]] = runs
        if job["state"] not in TERMINAL:
            continue
        if job["state"] != "succeeded":
            account.problems.append(f"{job['id']}: {job['state']} {job['reason']} {job['message']}")
            continue
        outputs = client.call("GET", f"/api/v1/jobs/{job['id']}/outputs").json()
        if [o["path"] for o in outputs] != ["result.txt"]:
            account.problems.append(f"{job['id']}: succeeded with outputs {[o['path'] for o in outputs]}")
            continue
        data = client.call("GET", f"/api/v1/jobs/{job['id']}/outputs/result.txt").text
        if data != job["id"] * 50:
            account.problems.append(f"{job['id']}: result.txt holds {len(data)} characters")
    return account
