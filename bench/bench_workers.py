"""Remote workers: trivial jobs/s through 1, 4 and 8 workers, submit -> started with an idle worker, and
claim latency: one claimer over 1,000 queued jobs, and 16 concurrent claimers over 100,000.

Targets (issue 5): submit -> started p50 <= 100 ms with an idle worker; every job runs exactly once;
claim latency p50/p99 with 100,000 queued jobs and 16 claimers on PostgreSQL.

Everything runs against a real ``labcloud serve`` with ``LABCLOUD_EXECUTOR=pull`` (see harness.py) and
real ``labcloud worker`` processes on this machine. The trivial job appends its id to a file outside its
folder (so the workers run with ``--sandbox off``); counting the lines proves each ran exactly once.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.bench_jobs import (
    ACTIVE_QUERY,
    JOB_COLUMNS,
    LOAD_BATCH,
    JobsServer,
    _sqlite_value,
    ms_between,
    p50,
    threaded,
    ts,
    wait_terminal,
)
from bench.bench_sweeps import run_sweep
from bench.harness import Result, latency_summary, reachable, run_all, running_server
from labcloud.db.types import new_id

SINK_APP = "bench-sink"
APPS = {
    SINK_APP: """\
name: bench-sink
title: Bench sink
description: Appends its job id to a file (the proof that it ran, and how often).
versions:
  "1.0":
    entrypoints:
      run:
        command:
          - sh
          - -c
          - 'if [ -n "$LABCLOUD_PARAM_SINK" ]; then echo "$LABCLOUD_JOB_ID" >> "$LABCLOUD_PARAM_SINK"; fi'
        parameters:
          type: object
          properties:
            sink: {type: string, default: ""}
            i: {type: integer, default: 0}
        resources: {cpus: 1, memory_mb: 16, gpus: 0, timeout_s: 60}
""",
}
TARGETS = {
    "throughput": "every job exactly once",
    "started": "p50 <= 100 ms",
    "claim": "p50 <= 3 ms with 1,000 queued, 1 claimer",
    "claims": "p50 <= 15 ms and >= 300 claims/s with 100,000 queued, 16 claimers",
    "sweep": "none of its own (the local executor's: 1,000 in < 15 s)",
}
WORKER_COUNTS = (1, 4, 8)
JOBS = {1: 300, 4: 1000, 8: 2000}
JOBS_QUICK = {1: 60, 4: 150, 8: 300}
SLOTS = 2  # jobs a worker runs at once (--cpus; each job takes one CPU)
SUBMIT_CLIENTS = 4
STARTED_JOBS = 50
QUEUED = 100_000
QUEUED_QUICK = 10_000
CLAIMERS = 16
ONE_QUEUED = 1_000  # one claimer, a short queue: the claim's own cost
ONE_CLAIMS = 300
ONE_CLAIMS_QUICK = 60
CLAIMS_EACH = 150
CLAIMS_EACH_QUICK = 30
LABCLOUD = [sys.executable, "-m", "labcloud.cli"]


@dataclass
class WorkerFleet:
    """``labcloud worker`` processes, each registered through the admin API."""

    server: JobsServer
    root: Path
    processes: list[subprocess.Popen[bytes]]

    @classmethod
    @contextmanager
    def start(cls, js: JobsServer, count: int, *args: str, cpus: int = SLOTS) -> Iterator[WorkerFleet]:
        with tempfile.TemporaryDirectory(prefix="labcloud-bench-workers-") as tmp:
            reachable(Path(tmp))
            fleet = cls(js, Path(tmp), [])
            try:
                with js.client() as c:
                    for i in range(count):
                        r = c.post("/api/v1/workers", json={"name": f"bench-{uuid.uuid4().hex[:8]}-{i}"})
                        r.raise_for_status()
                        fleet._spawn(i, r.json()["token"], args, cpus)
                for i in range(count):
                    fleet.wait_connected(i)
                yield fleet
            finally:
                fleet.stop()

    def log(self, i: int) -> Path:
        return self.root / f"worker-{i}.log"

    def _spawn(self, i: int, token: str, args: tuple[str, ...], cpus: int) -> None:
        env = {**self.server.server.env, "LABCLOUD_WORKER_TOKEN": token}
        command = [
            *LABCLOUD,
            "worker",
            "--server",
            self.server.server.url,
            "--work-dir",
            str(self.root / f"w{i}"),
            "--cpus",
            str(cpus),
            "--memory-mb",
            "4096",
            "--log-level",
            "warning",
            *args,
        ]
        with open(self.log(i), "wb") as log:
            self.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    def wait_connected(self, i: int, timeout_s: float = 90) -> None:
        """The first heartbeat went through: the worker shows up with a heartbeat time."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.processes[i].poll() is not None:
                raise RuntimeError(f"worker {i} exited: {self.log(i).read_text()[-2000:]}")
            with self.server.client() as c:
                items = c.get("/api/v1/workers", params={"limit": 200}).json()["items"]
            if sum(1 for w in items if w["last_heartbeat_at"]) > i:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {i} did not connect: {self.log(i).read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.send_signal(signal.SIGINT)  # the second cancels whatever still runs
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def pull_server(backend: str, extra_env: dict[str, str] | None = None) -> Iterator[JobsServer]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as apps:
        for name, text in APPS.items():
            (Path(apps) / f"{name}.yaml").write_text(text)
        env = {"LABCLOUD_APPS_DIR": apps, "LABCLOUD_EXECUTOR": "pull", **(extra_env or {})}
        with running_server(backend, env) as server:
            yield JobsServer(server, {"Authorization": f"Bearer {server.admin_token()}"})


def all_jobs(c: httpx.Client, wanted: set[str]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, "app": SINK_APP} | ({"cursor": cursor} if cursor else {})
        page = c.get("/api/v1/jobs", params=params).json()
        jobs += [j for j in page["items"] if j["id"] in wanted]
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


# ---------------------------------------------------------------------------------------- throughput


def measure_throughput(backend: str, quick: bool) -> list[Result]:
    return [through(backend, count, (JOBS_QUICK if quick else JOBS)[count]) for count in WORKER_COUNTS]


def through(backend: str, count: int, n_jobs: int) -> Result:
    """``n_jobs`` trivial jobs through ``count`` workers, each counted in the sink."""
    ids: list[str] = []
    lock = threading.Lock()
    with (
        pull_server(backend) as js,
        tempfile.TemporaryDirectory(prefix="labcloud-bench-sink-") as tmp,
        WorkerFleet.start(js, count, "--sandbox", "off"),
    ):
        sink = Path(tmp) / "sink.txt"
        reachable(Path(tmp))
        sink.touch(mode=0o666)
        sink.chmod(0o666)  # (the jobs run as the job user, without a sandbox: they append to it)
        with js.client() as c:
            for _ in range(2 * count):  # warm-up: every worker's first job
                wait_terminal(c, submit_sink(c, "")["id"], 60)

        def client(i: int) -> None:
            mine = n_jobs // SUBMIT_CLIENTS + (i < n_jobs % SUBMIT_CLIENTS)
            with js.client() as wc:
                got = [submit_sink(wc, str(sink))["id"] for _ in range(mine)]
            with lock:
                ids.extend(got)

        submit_s = threaded(SUBMIT_CLIENTS, client)
        deadline = time.monotonic() + max(120.0, n_jobs * 0.5)
        with js.client() as c:
            while c.get(ACTIVE_QUERY).json()["items"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n_jobs} jobs through {count} workers did not all end in time")
                time.sleep(0.1)
            jobs = all_jobs(c, set(ids))
        runs = Counter(sink.read_text().split()) if sink.exists() else Counter()
    succeeded = sum(j["state"] == "succeeded" for j in jobs)
    first_created = min(ts(j["created_at"]) for j in jobs)
    last_finished = max(ts(j["finished_at"]) for j in jobs if j["finished_at"])
    span_s = (last_finished - first_created).total_seconds()
    per_job = [ms_between(j["created_at"], j["finished_at"]) for j in jobs if j["finished_at"]]
    missing = sum(1 for i in ids if runs[i] == 0)
    twice = sum(1 for i in ids if runs[i] > 1)
    if missing or twice or len(runs) != len(ids):
        raise RuntimeError(f"not exactly once: {missing} never ran, {twice} ran more than once")
    return Result(
        f"workers: trivial jobs through {count} worker{'s' if count > 1 else ''}",
        backend,
        {
            "jobs": float(len(jobs)),
            "succeeded": float(succeeded),
            "jobs_per_s": round(len(jobs) / span_s, 1),
            "span_s": round(span_s, 2),
            "submit_phase_s": round(submit_s, 2),
            "created_to_finished_p50_ms": p50(per_job),
            "ran_exactly_once": float(len(ids) - missing - twice),
            "retried": float(sum(1 for j in jobs if j["attempts"] > 1)),
        },
        target=TARGETS["throughput"],
        notes=f"{n_jobs} jobs (`sh -c 'echo $LABCLOUD_JOB_ID >> sink'`, 1 CPU each) submitted by "
        f"{SUBMIT_CLIENTS} threads as fast as possible; {count} `labcloud worker` processes, "
        f"--cpus {SLOTS} --sandbox off, each claim/start/log/finish a real HTTP call; jobs/s = N / "
        "(last finished_at - first created_at); the sink file is counted: every id exactly once",
    )


def submit_sink(c: httpx.Client, sink: str) -> dict[str, Any]:
    r = c.post("/api/v1/jobs", json={"app": SINK_APP, "params": {"sink": sink}})
    if r.status_code != 201:
        raise RuntimeError(f"submit: {r.status_code} {r.text[:500]}")
    job: dict[str, Any] = r.json()
    return job


# -------------------------------------------------------------------------------------------- sweep

SWEEP_JOBS = 1000
SWEEP_WORKERS = 4
SWEEP_SLOTS = 4  # each worker's --cpus: its claims may take up to 4 of the sweep's 1-CPU jobs at once


def measure_sweep(backend: str, quick: bool) -> list[Result]:
    """One sweep of trivial jobs through 4 workers with room for 4 jobs each, until all have ended."""
    count = 200 if quick else SWEEP_JOBS
    with (
        pull_server(backend) as js,
        tempfile.TemporaryDirectory(prefix="labcloud-bench-sink-") as tmp,
        WorkerFleet.start(js, SWEEP_WORKERS, "--sandbox", "off", cpus=SWEEP_SLOTS),
        js.client() as c,
    ):
        sink = Path(tmp) / "sink.txt"
        reachable(Path(tmp))
        sink.touch(mode=0o666)
        sink.chmod(0o666)  # (the jobs run as the job user, without a sandbox: they append to it)
        for _ in range(2 * SWEEP_WORKERS):  # warm-up
            wait_terminal(c, submit_sink(c, "")["id"], 60)
        body = {"app": SINK_APP, "params": {"sink": str(sink)}, "grid": {"i": list(range(count))}}
        sweep, submit_s, wall_s = run_sweep(c, body, max(120.0, count * 0.5), 0.2)
        runs = Counter(sink.read_text().split()) if sink.exists() else Counter()
    if len(runs) != count or set(runs.values()) != {1}:
        raise RuntimeError(f"not exactly once: {len(runs)} of {count} ran, counts {set(runs.values())}")
    return [
        Result(
            f"workers: {count:,} trivial jobs as one sweep, {SWEEP_WORKERS} workers",
            backend,
            {
                "jobs": float(sweep["total"]),
                "succeeded": float(sweep["counts"].get("succeeded", 0)),
                "submit_s": round(submit_s, 3),
                "all_ended_s": round(wall_s, 2),
                "jobs_per_s": round(count / wall_s, 1),
            },
            target=TARGETS["sweep"],
            notes=f"one POST /api/v1/sweeps of {count} jobs (1 CPU each) to {SWEEP_WORKERS} "
            f"`labcloud worker` processes with --cpus {SWEEP_SLOTS} --sandbox off, whose claims take as "
            "many jobs as fit; "
            "all_ended_s from the POST to the client seeing the sweep ended (polled every 0.2 s); the sink "
            "file is counted: every job exactly once",
        )
    ]


# ------------------------------------------------------------------------------------------ started


def measure_started(backend: str, quick: bool) -> list[Result]:
    count = 15 if quick else STARTED_JOBS
    total: list[float] = []
    pickup: list[float] = []
    staging: list[float] = []
    with pull_server(backend) as js, WorkerFleet.start(js, 1), js.client() as c:
        for _ in range(3):  # warm-up: first sandbox launch
            wait_terminal(c, submit_sink(c, "")["id"], 60)
        for _ in range(count):
            job = submit_sink(c, "")
            time.sleep(0.3)  # the worker is idle again (long-polling) before the next submit
            job = wait_terminal(c, job["id"], 60, first_poll_s=0.0, poll_s=0.05)
            if job["started_at"] is None:
                raise RuntimeError(f"job {job['id']} never started: {job['message']}")
            events = c.get(f"/api/v1/jobs/{job['id']}/events").json()
            claimed = next(e["at"] for e in events if e["to_state"] == "staging")
            total.append(ms_between(job["created_at"], job["started_at"]))
            pickup.append(ms_between(job["created_at"], claimed))
            staging.append(ms_between(claimed, job["started_at"]))
    metrics = latency_summary([x / 1000 for x in total]) | {
        "claimed_p50_ms": p50(pickup),
        "claimed_p99_ms": round(sorted(pickup)[min(len(pickup) - 1, round(0.99 * (len(pickup) - 1)))], 3),
        "claim_to_started_p50_ms": p50(staging),
    }
    return [
        Result(
            "workers: submit -> started, idle worker",
            backend,
            metrics,
            target=TARGETS["started"],
            notes=f"{count} trivial jobs one at a time to one idle `labcloud worker` (sandbox as by default) "
            "whose claim is long-polling; created_at -> started_at of the job (server clock: the worker's "
            "POST /start, right before launch); claimed = created_at -> the queued->staging event (the "
            "long poll woken and answered); claim_to_started = fetch the plan, stage, POST /start",
        )
    ]


# -------------------------------------------------------------------------------------------- claims


def load_queued(js: JobsServer, template: dict[str, Any], owner: uuid.UUID, count: int) -> None:
    """``count`` queued jobs for the pull executor, straight into the database, oldest first."""
    columns = list(JOB_COLUMNS)
    fixed = {
        "owner_id": owner,
        "project_id": uuid.UUID(template["project_id"]),
        "app": template["app"],
        "version": template["version"],
        "entrypoint": template["entrypoint"],
        "spec": json.dumps(template["spec"]),
        "spec_hash": template["spec_hash"],
        "params": json.dumps(template["params"]),
        "inputs": "{}",
        "env": "{}",
        "resources": json.dumps(template["resources"]),
        "tags": "{}",
        "state": "queued",
        "reason": None,
        "message": "waiting for a worker",
        "exit_code": None,
        "progress": None,
        "attempts": 0,
        "max_attempts": template["max_attempts"],
        "executor": "pull",
        "executor_ref": None,
        "usage": "{}",
        "rerun_of": None,
        "started_at": None,
        "finished_at": None,
    }

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        done = 0
        while done < count:
            rows = []
            for i in range(done, min(count, done + LOAD_BATCH)):
                now = datetime.now(UTC)
                values = fixed | {"id": new_id(), "name": f"queued-{i}", "created_at": now, "updated_at": now}
                rows.append(tuple(values[col] for col in columns))
            done += len(rows)
            yield rows

    if js.backend == "sqlite":
        conn = sqlite3.connect(js.sqlite_path, timeout=30)
        try:
            sql = f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for rows in batches():
                conn.executemany(sql, ([_sqlite_value(v) for v in row] for row in rows))
                conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return
    with psycopg.connect(js.pg_dsn, autocommit=True) as pg:
        with pg.cursor() as cur, cur.copy(f"COPY jobs ({', '.join(columns)}) FROM STDIN") as copy:
            for rows in batches():
                for row in rows:
                    copy.write_row(row)
        pg.execute("VACUUM (ANALYZE) jobs")


def measure_claim(backend: str, quick: bool) -> list[Result]:
    return measure_claims(backend, quick, ONE_QUEUED, 1, ONE_CLAIMS_QUICK if quick else ONE_CLAIMS)


def measure_claims(
    backend: str, quick: bool, queued: int = 0, claimers: int = CLAIMERS, each: int = 0
) -> list[Result]:
    queued = queued or (QUEUED_QUICK if quick else QUEUED)
    each = each or (CLAIMS_EACH_QUICK if quick else CLAIMS_EACH)
    samples: list[float] = []
    claimed: list[str] = []
    empties: list[int] = []
    errors: list[int] = []
    lock = threading.Lock()
    # Long leases: claimed jobs stay claimed (nobody heartbeats) for the whole measurement.
    with pull_server(backend, {"LABCLOUD_LEASE_SECONDS": "3600"}) as js, js.client() as c:
        me = c.get("/api/v1/me")
        if me.status_code != 200:
            raise RuntimeError(f"GET /api/v1/me: {me.status_code} {me.text[:300]}")
        owner = uuid.UUID(me.json()["id"])
        template = submit_sink(c, "")
        t0 = time.perf_counter()
        load_queued(js, template, owner, queued)
        load_s = time.perf_counter() - t0
        tokens = []
        for i in range(claimers):
            r = c.post("/api/v1/workers", json={"name": f"claimer-{i}"})
            r.raise_for_status()
            tokens.append(r.json()["token"])
        body = {"free": {"cpus": 4, "memory_mb": 4096, "gpus": 0}, "labels": {}, "wait_s": 0}

        def claimer(i: int) -> None:
            local: list[float] = []
            got: list[str] = []
            empty = failed = 0
            headers = {"Authorization": f"Bearer {tokens[i]}"}
            with httpx.Client(base_url=js.server.url, timeout=60, headers=headers) as wc:
                while len(got) < each + 5:
                    start = time.perf_counter()
                    try:
                        r = wc.post("/api/v1/worker/claim", json=body)
                    except httpx.TransportError:  # the server dropped the connection: a failure too
                        r = httpx.Response(599)
                    took = time.perf_counter() - start
                    if r.status_code == 204 or r.status_code >= 500:
                        # 204: every candidate it looked at went to another claimer; 5xx: the server
                        # failed (SQLite: "database is locked"); a worker retries both
                        empty += r.status_code == 204
                        failed += r.status_code >= 500
                        if empty + failed > 10 * each:
                            raise RuntimeError(
                                f"claims keep failing although jobs are queued: {r.status_code}"
                            )
                        continue
                    if r.status_code != 200 or "job" not in r.json():
                        raise RuntimeError(f"claim: {r.status_code} {r.text[:300]}")
                    got.append(r.json()["job"]["id"])
                    if len(got) > 5:  # the first few warm the connection
                        local.append(took)
            with lock:
                samples.extend(local)
                claimed.extend(got)
                empties.append(empty)
                errors.append(failed)

        elapsed = threaded(claimers, claimer)
        if len(set(claimed)) != len(claimed):
            raise RuntimeError("a job was claimed twice")
    metrics = latency_summary(samples) | {
        "claims_per_s": round(len(claimed) / elapsed, 1),
        "queued": float(queued),
        "distinct_jobs": float(len(set(claimed))),
        "empty_answers": float(sum(empties)),
        "server_errors": float(sum(errors)),
        "insert_s": round(load_s, 1),
    }
    return [
        Result(
            f"workers: claim latency ({claimers} claimer{'s' if claimers > 1 else ''})",
            backend,
            metrics,
            target=TARGETS["claims" if claimers > 1 else "claim"],
            notes=f"{queued:,} queued pull jobs inserted directly; {claimers} threads, each its own worker "
            f"token and keep-alive connection, {each} timed claims each (after 5) with wait_s=0, nothing "
            "finished (leases of an hour); every claimed id distinct; empty_answers: 204s although jobs were "
            "queued (all candidates taken by concurrent claimers); server_errors: 5xx answers and dropped "
            "connections; both retried, not timed",
        )
    ]


# ------------------------------------------------------------------------------------------------ run

MEASUREMENTS: dict[str, Callable[[str, bool], list[Result]]] = {
    "throughput": measure_throughput,
    "started": measure_started,
    "claim": measure_claim,
    "claims": measure_claims,
    "sweep": measure_sweep,
}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    return run_all("workers", MEASUREMENTS, TARGETS, backends, quick)
