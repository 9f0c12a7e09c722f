"""Trust: what kill -9 of the server does to jobs, and what isolating a job costs.

- ``crash``: 300 short jobs (a job prints "RUN <id>" first: its log is the ledger) while the server is
  killed with SIGKILL four times at random moments and started again (:mod:`testing.crash`). Counted
  afterwards: jobs whose command did not run exactly once, jobs that never ended, jobs that did not succeed
  with their whole output. The landed code before the runner was rewritten ran 19 of 2 x 300 jobs twice
  and ended 5 as succeeded without outputs.
- ``isolation``: submit -> succeeded of a trivial job (``true``), one at a time, on a server whose jobs run
  in the sandbox as the unprivileged job user, and on one with the sandbox off (as the server's own user),
  measured alternately in the same run; medians and their ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import ADMIN_EMAIL, ADMIN_PASSWORD, Result, database, run_all, running_server
from testing import crash
from testing.daemons import clean_env

TARGETS = {
    "crash": "0 run twice, 0 stuck, 0 without their outputs",
    "isolation": "sandbox + job user within a few ms of no isolation",
}
CRASH_JOBS, CRASH_JOBS_QUICK = 300, 60
KILLS = 4
ISOLATION_ROUNDS, ISOLATION_ROUNDS_QUICK = 5, 2
ISOLATION_JOBS = 10  # per round and server
TRUE_APP = """\
name: bench-true
title: Bench true
description: Exits at once with status 0.
versions:
  "1.0":
    entrypoints:
      run:
        command: ["true"]
        resources: {cpus: 0.01, memory_mb: 16, gpus: 0, timeout_s: 60}
"""


def crash_experiment(backend: str, quick: bool) -> list[Result]:
    jobs = CRASH_JOBS_QUICK if quick else CRASH_JOBS
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-crash-") as tmp, database(backend) as url:
        home = Path(tmp)
        crash.write_ledger_app(home / "apps")
        env = {
            "LABCLOUD_HOME": str(home),
            "LABCLOUD_DATABASE_URL": url,
            "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN_EMAIL,
            "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LABCLOUD_LOG_LEVEL": "warning",
            "LABCLOUD_LOCAL_CPUS": "2",
        }
        if url:
            upgrade = [sys.executable, "-m", "labcloud.cli", "db", "upgrade"]
            subprocess.run(upgrade, env={**clean_env(), **env}, check=True, capture_output=True)
        server = crash.KillableServer(env)
        try:
            account = crash.run(server, (ADMIN_EMAIL, ADMIN_PASSWORD), jobs=jobs, kills=KILLS, seed=42)
        finally:
            server.stop()
    metrics = {
        "jobs": float(account.jobs),
        "kills": float(account.kills),
        "ran_not_once": float(len(account.ran_twice)),
        "stuck": float(sum(account.stuck.values())),
        "not_whole": float(len(account.problems)),
        "retried": float(sum(n for attempts, n in account.attempts.items() if attempts > 1)),
        "seconds": round(account.seconds, 1),
    }
    notes = "clean" if account.clean else "; ".join(account.problems[:3]) or f"{account.ran_twice}"
    return [Result("trust: crash (kill -9 x4)", backend, metrics, TARGETS["crash"], notes[:300])]


def _one_job(client: httpx.Client) -> float:
    started = time.perf_counter()
    job = client.post("/api/v1/jobs", json={"app": "bench-true"}).json()
    while True:
        state = client.get(f"/api/v1/jobs/{job['id']}").json()["state"]
        if state in crash.TERMINAL:
            if state != "succeeded":
                raise RuntimeError(f"a trivial job ended {state}")
            return time.perf_counter() - started
        time.sleep(0.002)


def isolation_cost(backend: str, quick: bool) -> list[Result]:
    rounds = ISOLATION_ROUNDS_QUICK if quick else ISOLATION_ROUNDS
    samples: dict[str, list[float]] = {"sandboxed": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as apps:
        (Path(apps) / "bench-true.yaml").write_text(TRUE_APP)
        common = {"LABCLOUD_APPS_DIR": apps, "LABCLOUD_SCHEDULER_INTERVAL_S": "0.2"}
        with (
            running_server(backend, common) as sandboxed,
            running_server(backend, {**common, "LABCLOUD_SANDBOX": "off"}) as off,
        ):
            servers = {"sandboxed": sandboxed, "off": off}
            clients = {
                name: srv.client(headers={"Authorization": f"Bearer {srv.admin_token()}"})
                for name, srv in servers.items()
            }
            for client in clients.values():
                _one_job(client)  # warm up
            for _ in range(rounds):
                for name, client in clients.items():  # alternately, so both see the same machine
                    samples[name] += [_one_job(client) for _ in range(ISOLATION_JOBS)]
            for client in clients.values():
                client.close()
    sandboxed_ms = statistics.median(samples["sandboxed"]) * 1000
    off_ms = statistics.median(samples["off"]) * 1000
    metrics = {
        "sandboxed_p50_ms": round(sandboxed_ms, 1),
        "off_p50_ms": round(off_ms, 1),
        "ratio": round(sandboxed_ms / off_ms, 2),
        "n": float(len(samples["off"])),
    }
    note = "submit -> succeeded of `true`, one at a time; job user + bubblewrap vs no isolation"
    return [Result("trust: isolation cost", backend, metrics, TARGETS["isolation"], note)]


MEASUREMENTS = {"crash": crash_experiment, "isolation": isolation_cost}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    return run_all("trust", MEASUREMENTS, TARGETS, backends, quick)
