"""Engines: trivial jobs/s through Slurm and through Celery, each beside the same trivial work handed to the
engine directly in the same run, and submit -> running latency for each engine.

Target (issue): labcloud adds no more than 20% over the engine's own throughput, i.e. labcloud jobs/s >= 80%
of raw ``sbatch`` jobs/s, and >= 80% of plain Celery tasks/s. Submit -> running latency is reported for each
engine, beside the engine's own.

Slurm: a real single-node cluster (bench/slurm.py: munged, slurmctld and slurmd on this machine, all its
CPUs) and a real ``labcloud serve`` with ``LABCLOUD_EXECUTOR=slurm`` (squeue every 0.5 s, sandbox off) whose
trivial app runs ``true`` with 1 CPU and 16 MB: each job is an ``sbatch`` whose batch script starts the
runner (``python -m labcloud.worker.runjob``), which takes the job through the worker API, runs ``true``
under its supervisor and reports. The baseline is ``sbatch --wrap true`` with the same CPUs, memory (the
16 MB plus the runner's 256 MB that labcloud asks for) and time limit, against the same cluster.

Celery: Redis on 127.0.0.1:6379, a ``labcloud serve`` with ``LABCLOUD_EXECUTOR=celery`` and one ``labcloud
celery-worker`` (threads pool, concurrency 2, sandbox off) on queues of a prefix of this run's own. The
baseline is a plain Celery task running ``subprocess.run(["true"])`` in a worker with labcloud's own app
configuration (``create_app``: late acks, prefetch 1, no result backend), the same pool and concurrency; it
pushes its start and end times to a Redis list, which is how the benchmark counts it done.

Throughput rounds alternate (engine, labcloud, engine, labcloud, ...): a shared 2-core machine drifts, and
the medians are what is reported. jobs/s = N / (last end - first submit); the end is a job's finished_at
for labcloud (the runner's report), for raw sbatch the first squeue poll (every 0.1 s) that lists none of
the round's jobs (which counts Slurm's own completion and up to 0.1 s of polling against the baseline), for
plain Celery the task's own end time. CPU per job: the whole machine's busy time during a round / N (only
meaningful when ``other_cpu_pct`` is low: Slurm's daemons and their job steps are not children of ours), and
the server's and the Celery workers' own process trees.

Latency is measured on an idle engine, one job at a time, alternating too: labcloud's is created_at ->
started_at (server clock; the runner's POST /start, right before the command starts), split by the job's
events into taken (-> staging: a job stays queued in the engine's queue until its runner takes it, so
this is the engine's queue and start, and the runner's own start-up), taken -> running (the runner's plan
and POST /start) and running -> finished (the command, the log, POST /finish). Raw
sbatch's is the time before ``sbatch`` -> the first ``squeue -j`` (polled every 20 ms) that no longer says
PENDING, -> the batch script's command really ran (it writes ``date`` to a file), and Slurm's own
SubmitTime -> StartTime (whole seconds only). Plain Celery's is ``send_task`` -> the task's first line.

Sandboxes are off on both sides (the baselines have none). Only the first backend given runs (SQLite in the
default order): the engines are measured here, not the database.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery

from bench.bench_jobs import ACTIVE_QUERY, JobsServer, threaded, ts
from bench.harness import Result, percentile, reachable, run_all, running_server
from labcloud.worker.celery_app import create_app
from testing.daemons import clean_env
from testing.slurm import SlurmCluster, slurm_cluster

APP = "bench-engine-true"
APP_YAML = """\
name: bench-engine-true
title: Bench engine true
description: Exits at once with status 0, through whichever engine the server hands it to.
versions:
  "1.0":
    entrypoints:
      run:
        command: ["true"]
        parameters:
          type: object
          properties:
            i: {type: integer, minimum: 0}
        resources: {cpus: 1, memory_mb: 16, gpus: 0, timeout_s: 60}
"""
TARGETS = {
    "slurm": "labcloud >= 80% of raw sbatch jobs/s",
    "slurm_sweep": "labcloud sweep >= 90% of a raw sbatch --array",
    "celery": "labcloud >= 80% of plain Celery tasks/s",
}
LATENCY_TARGET = "reported beside the engine's own"
# sbatch options of the baseline: what labcloud's SlurmExecutor asks for the app above (1 CPU; 16 MB + the
# runner's 256 MB; (60 s + 300 s of staging slack) in minutes)
RAW_SBATCH = ["--cpus-per-task=1", "--mem=272M", "--time=6", "--chdir=/tmp", "--export=PATH"]
SLURM_JOBS, SLURM_JOBS_QUICK = 40, 10
SLURM_ROUNDS, SLURM_ROUNDS_QUICK = 3, 1
SLURM_LATENCY, SLURM_LATENCY_QUICK = 8, 3
SLURM_POLL_S = 0.5
CELERY_JOBS, CELERY_JOBS_QUICK = 200, 30
CELERY_ROUNDS, CELERY_ROUNDS_QUICK = 3, 1
CELERY_LATENCY, CELERY_LATENCY_QUICK = 20, 5
CONCURRENCY = 2
SUBMIT_CLIENTS = 4
DONE_POLL_S = 0.1
LABCLOUD_POLL_S = 0.5  # the end comes from finished_at: polling only has to notice it, and costs server CPU
LATENCY_POLL_S = 0.02
IDLE_PAUSE_S = 0.3  # between latency samples: the engine's workers are waiting again
REDIS = "redis://127.0.0.1:6379/0"
PLAIN_TASK = "bench.plain_true"
LABCLOUD = [sys.executable, "-m", "labcloud.cli"]
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------- helpers


@dataclass
class Round:
    """One throughput round: ``count`` jobs, first submit at ``t0``, last end at ``end`` (epoch seconds)."""

    count: int
    t0: float
    end: float
    machine_cpu_s: float
    server_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.count / (self.end - self.t0)


@dataclass
class Latencies:
    labcloud_ms: list[float] = field(default_factory=list)
    engine_ms: list[float] = field(default_factory=list)
    engine_command_ms: list[float] = field(default_factory=list)  # raw sbatch: until the command ran
    taken_ms: list[float] = field(default_factory=list)  # created -> staging (the runner took it)
    taken_to_running_ms: list[float] = field(default_factory=list)  # staging -> running
    running_to_finished_ms: list[float] = field(default_factory=list)


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy so far."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants (0 once it is gone)."""
    total = 0.0
    if pid <= 0:
        return total
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        pass
    return total


def server_pid(js: JobsServer) -> int:
    assert js.server.process is not None
    return js.server.process.pid


def submit(c: httpx.Client) -> str:
    r = c.post("/api/v1/jobs", json={"app": APP})
    if r.status_code != 201:
        raise RuntimeError(f"submit: {r.status_code} {r.text[:500]}")
    job_id: str = r.json()["id"]
    return job_id


def fetch_jobs(c: httpx.Client, wanted: set[str]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, "app": APP} | ({"cursor": cursor} if cursor else {})
        page = c.get("/api/v1/jobs", params=params).json()
        jobs += [j for j in page["items"] if j["id"] in wanted]
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


def wait_done(c: httpx.Client, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            if job["state"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['state']}: {job['message']}")
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['state']} after {timeout_s:g} s: {job['message']}")
        time.sleep(LATENCY_POLL_S)


def labcloud_round(js: JobsServer, count: int, timeout_s: float, worker_pid: int = 0) -> Round:
    """``count`` trivial jobs submitted by SUBMIT_CLIENTS threads as fast as possible; all must succeed."""
    ids: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        mine = count // SUBMIT_CLIENTS + (i < count % SUBMIT_CLIENTS)
        with js.client() as wc:
            got = [submit(wc) for _ in range(mine)]
        with lock:
            ids.extend(got)

    cpu0, server0, worker0 = busy_cpu_s(), tree_cpu_s(server_pid(js)), tree_cpu_s(worker_pid)
    t0 = time.time()
    threaded(SUBMIT_CLIENTS, client)
    deadline = time.monotonic() + timeout_s
    with js.client() as c:
        while c.get(ACTIVE_QUERY).json()["items"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} labcloud jobs did not all end within {timeout_s:g} s")
            time.sleep(LABCLOUD_POLL_S)
        machine = busy_cpu_s() - cpu0
        server, worker = tree_cpu_s(server_pid(js)) - server0, tree_cpu_s(worker_pid) - worker0
        jobs = fetch_jobs(c, set(ids))
    bad = [j for j in jobs if j["state"] != "succeeded"]
    if bad or len(jobs) != count:
        shown = "; ".join(f"{j['state']}: {j['message']}" for j in bad[:3])
        raise RuntimeError(f"{len(jobs)} of {count} labcloud jobs found, {len(bad)} not succeeded: {shown}")
    end = max(ts(j["finished_at"]).timestamp() for j in jobs)
    return Round(count, t0, end, machine, server, worker)


def labcloud_sweep_round(js: JobsServer, count: int, timeout_s: float) -> Round:
    """``count`` trivial jobs as one sweep (``POST /api/v1/sweeps``); all must succeed."""
    cpu0, server0 = busy_cpu_s(), tree_cpu_s(server_pid(js))
    t0 = time.time()
    with js.client() as c:
        r = c.post("/api/v1/sweeps", json={"app": APP, "grid": {"i": list(range(count))}}, timeout=60)
        if r.status_code != 201:
            raise RuntimeError(f"sweep: {r.status_code} {r.text[:500]}")
        sweep_id = r.json()["id"]
        deadline = time.monotonic() + timeout_s
        while (seen := c.get(f"/api/v1/sweeps/{sweep_id}").json())["done"] < 1.0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sweep of {count} jobs not ended within {timeout_s:g} s: {seen['counts']}"
                )
            time.sleep(LABCLOUD_POLL_S)
        machine, server = busy_cpu_s() - cpu0, tree_cpu_s(server_pid(js)) - server0
        if seen["counts"] != {"succeeded": count}:
            raise RuntimeError(f"sweep of {count} jobs ended {seen['counts']}")
        jobs = c.get(f"/api/v1/sweeps/{sweep_id}/jobs", params={"limit": 200}).json()["items"]
    end = max(ts(j["finished_at"]).timestamp() for j in jobs)
    return Round(count, t0, end, machine, server)


def labcloud_single(js: JobsServer, lat: Latencies, timeout_s: float) -> None:
    """One job on an idle engine: created -> started, and its phases from its events."""
    with js.client() as c:
        job = wait_done(c, submit(c), timeout_s)
        events = c.get(f"/api/v1/jobs/{job['id']}/events").json()
    taken = next(e["at"] for e in events if e["to_state"] == "staging")
    running = next(e["at"] for e in events if e["to_state"] == "running")
    lat.labcloud_ms.append(ms(job["created_at"], job["started_at"]))
    lat.taken_ms.append(ms(job["created_at"], taken))
    lat.taken_to_running_ms.append(ms(taken, running))
    lat.running_to_finished_ms.append(ms(job["started_at"], job["finished_at"]))


def ms(a: str, b: str) -> float:
    return (ts(b) - ts(a)).total_seconds() * 1000


def p(samples: list[float], q: float) -> float:
    return round(statistics.median(samples) if q == 50 else percentile(samples, q), 1)


def latency_metrics(lat: Latencies, engine: str) -> dict[str, float]:
    return {
        "n": float(len(lat.labcloud_ms)),
        "labcloud_p50_ms": p(lat.labcloud_ms, 50),
        "labcloud_p95_ms": p(lat.labcloud_ms, 95),
        f"{engine}_p50_ms": p(lat.engine_ms, 50),
        f"{engine}_p95_ms": p(lat.engine_ms, 95),
        "lc_taken_p50_ms": p(lat.taken_ms, 50),
        "lc_taken_to_running_p50_ms": p(lat.taken_to_running_ms, 50),
        "lc_running_to_finished_p50_ms": p(lat.running_to_finished_ms, 50),
    }


def throughput_metrics(labcloud: list[Round], engine: list[Round], engine_name: str) -> dict[str, float]:
    lc = statistics.median(r.jobs_per_s for r in labcloud)
    raw = statistics.median(r.jobs_per_s for r in engine)
    count = labcloud[0].count
    metrics = {
        "jobs": float(count),
        "rounds": float(len(labcloud)),
        "labcloud_jobs_per_s": round(lc, 2),
        f"{engine_name}_jobs_per_s": round(raw, 2),
        "ratio": round(lc / raw, 3),
        "overhead_pct": round((1 - lc / raw) * 100, 1),
        "lc_machine_cpu_ms_per_job": round(
            statistics.median(r.machine_cpu_s for r in labcloud) / count * 1000
        ),
        f"{engine_name}_machine_cpu_ms_per_job": round(
            statistics.median(r.machine_cpu_s for r in engine) / count * 1000
        ),
        "lc_server_cpu_ms_per_job": round(statistics.median(r.server_cpu_s for r in labcloud) / count * 1000),
    }
    if any(r.worker_cpu_s for r in labcloud):
        metrics["lc_worker_cpu_ms_per_job"] = round(
            statistics.median(r.worker_cpu_s for r in labcloud) / count * 1000
        )
        metrics[f"{engine_name}_worker_cpu_ms_per_job"] = round(
            statistics.median(r.worker_cpu_s for r in engine) / count * 1000
        )
    return metrics


def per_round(labcloud: list[Round], engine: list[Round], engine_name: str) -> str:
    pairs = ", ".join(
        f"{e.jobs_per_s:.2f}/{lc.jobs_per_s:.2f}" for e, lc in zip(engine, labcloud, strict=True)
    )
    return f"rounds ({engine_name}/labcloud jobs/s, in order): {pairs}"


@contextmanager
def engine_server(backend: str, extra_env: dict[str, str]) -> Iterator[JobsServer]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as apps:
        (Path(apps) / f"{APP}.yaml").write_text(APP_YAML)
        env = {"LABCLOUD_APPS_DIR": apps, "LABCLOUD_SANDBOX": "off", **extra_env}
        with running_server(backend, env) as server:
            yield JobsServer(server, {"Authorization": f"Bearer {server.admin_token()}"})


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------- Slurm


def sbatch_raw(cluster: SlurmCluster, name: str, command: str = "true") -> str:
    out = cluster.run(
        "sbatch", "--parsable", f"--job-name={name}", *RAW_SBATCH,
        f"--output={cluster.root}/raw-%j.out", "--wrap", command,
    ).stdout  # fmt: skip
    slurm_id = out.strip().split(";")[0]
    if not slurm_id.isdigit():
        raise RuntimeError(f"sbatch answered {out!r}")
    return slurm_id


def listed(cluster: SlurmCluster) -> set[str]:
    return set(cluster.job_ids())


def wait_drained(cluster: SlurmCluster, timeout_s: float = 120) -> None:
    """Until squeue lists nothing (labcloud's runners included) and the node is idle."""
    deadline = time.monotonic() + timeout_s
    while listed(cluster):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Slurm still lists jobs after {timeout_s:g} s")
        time.sleep(DONE_POLL_S)
    cluster.wait_idle(timeout=30)


def completed(cluster: SlurmCluster, ids: list[str], timeout_s: float = 10) -> int:
    """How many of ``ids`` the job completion file says COMPLETED with exit 0:0 (waits for all of them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = cluster.run("sacct", "-c", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,State,ExitCode").stdout
        rows = {parts[0]: parts for line in out.splitlines() if len(parts := line.split("|")) >= 3}
        ok = sum(1 for i in ids if i in rows and rows[i][1] == "COMPLETED" and rows[i][2] == "0:0")
        if len(rows.keys() & set(ids)) == len(ids) or time.monotonic() > deadline:
            return ok
        time.sleep(DONE_POLL_S)


def raw_round(cluster: SlurmCluster, count: int, tag: str, timeout_s: float) -> Round:
    """``count`` ``sbatch --wrap true`` from SUBMIT_CLIENTS threads; done when squeue lists none of them."""
    ids: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        mine = count // SUBMIT_CLIENTS + (i < count % SUBMIT_CLIENTS)
        got = [sbatch_raw(cluster, f"raw-{tag}-{i}-{k}") for k in range(mine)]
        with lock:
            ids.extend(got)

    cpu0 = busy_cpu_s()
    t0 = time.time()
    threaded(SUBMIT_CLIENTS, client)
    deadline = time.monotonic() + timeout_s
    while listed(cluster) & set(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} raw sbatch jobs did not all end within {timeout_s:g} s")
        time.sleep(DONE_POLL_S)
    end = time.time()
    machine = busy_cpu_s() - cpu0
    ok = completed(cluster, ids)
    if ok != count:
        raise RuntimeError(f"only {ok} of {count} raw sbatch jobs COMPLETED with exit 0:0")
    return Round(count, t0, end, machine)


def raw_array_round(cluster: SlurmCluster, count: int, tag: str, timeout_s: float) -> Round:
    """One ``sbatch --array=0-<count - 1> --wrap true``; done when squeue lists none of its tasks."""
    name = f"raw-array-{tag}"
    cpu0 = busy_cpu_s()
    t0 = time.time()
    out = cluster.run(
        "sbatch", "--parsable", f"--job-name={name}", f"--array=0-{count - 1}", *RAW_SBATCH,
        f"--output={cluster.root}/raw-%A_%a.out", "--wrap", "true",
    ).stdout  # fmt: skip
    array_id = out.strip().split(";")[0]
    deadline = time.monotonic() + timeout_s
    while any(i.split("_")[0] == array_id for i in listed(cluster)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw array of {count} did not end within {timeout_s:g} s")
        time.sleep(DONE_POLL_S)
    end = time.time()
    machine = busy_cpu_s() - cpu0
    deadline = time.monotonic() + 10
    while True:  # the completion file names each task by its own job id, under the array's name
        rows = cluster.run("sacct", "-c", "-n", "-P", "-o", "JobName,State,ExitCode").stdout.splitlines()
        ok = sum(1 for row in rows if row == f"{name}|COMPLETED|0:0")
        if ok == count or time.monotonic() > deadline:
            break
        time.sleep(DONE_POLL_S)
    if ok != count:
        raise RuntimeError(f"only {ok} of {count} raw array tasks COMPLETED with exit 0:0")
    return Round(count, t0, end, machine)


def raw_single(cluster: SlurmCluster, lat: Latencies, slurm_s: list[float], tag: str) -> None:
    """One raw batch job on an idle node: until squeue no longer says PENDING; and until its command ran
    (``date`` into a file instead of ``true``: when the batch script really started)."""
    stamp = cluster.root / f"started-{tag}"
    t0 = time.time()
    slurm_id = sbatch_raw(cluster, f"raw-latency-{tag}", f"date +%s.%N > {stamp}")
    deadline = time.monotonic() + 60
    while cluster.run("squeue", "-h", "-j", slurm_id, "-o", "%T", check=False).stdout.strip() == "PENDING":
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw sbatch job {slurm_id} still pending after 60 s")
        time.sleep(LATENCY_POLL_S)
    lat.engine_ms.append((time.time() - t0) * 1000)
    shown = cluster.run("scontrol", "show", "job", "-o", slurm_id, check=False).stdout
    times = dict(re.findall(r"\b(SubmitTime|StartTime)=(\S+)", shown))
    if "SubmitTime" in times and "StartTime" in times:
        slurm_s.append((ts(times["StartTime"]) - ts(times["SubmitTime"])).total_seconds())
    deadline = time.monotonic() + 60
    while not (stamp.exists() and stamp.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw sbatch job {slurm_id} never ran its command")
        time.sleep(LATENCY_POLL_S)
    lat.engine_command_ms.append((float(stamp.read_text()) - t0) * 1000)


def measure_slurm(backend: str, quick: bool) -> list[Result]:
    count = SLURM_JOBS_QUICK if quick else SLURM_JOBS
    rounds = SLURM_ROUNDS_QUICK if quick else SLURM_ROUNDS
    samples = SLURM_LATENCY_QUICK if quick else SLURM_LATENCY
    timeout_s = max(180.0, count * 5.0)
    raw: list[Round] = []
    lc: list[Round] = []
    raw_arrays: list[Round] = []
    sweeps: list[Round] = []
    lat = Latencies()
    slurm_s: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="lcb-slurm-") as tmp,
        slurm_cluster(Path(tmp) / "c") as cluster,
    ):
        reachable(Path(tmp))
        env = {
            "LABCLOUD_EXECUTOR": "slurm",
            "LABCLOUD_SLURM_POLL_S": str(SLURM_POLL_S),
            "LABCLOUD_RUNNER_WORK_DIR": str(Path(tmp) / "runs"),
            "SLURM_CONF": str(cluster.conf),
        }
        with engine_server(backend, env) as js:
            # warm-up: slurmctld's first scheduling pass, the runner's files in the page cache
            sbatch_raw(cluster, "raw-warmup")
            wait_drained(cluster)
            with js.client() as c:
                for _ in range(2):
                    wait_done(c, submit(c), 120)
            wait_drained(cluster)
            for i in range(rounds):
                raw.append(raw_round(cluster, count, str(i), timeout_s))
                wait_drained(cluster)
                lc.append(labcloud_round(js, count, timeout_s))
                wait_drained(cluster)
                raw_arrays.append(raw_array_round(cluster, count, str(i), timeout_s))
                wait_drained(cluster)
                sweeps.append(labcloud_sweep_round(js, count, timeout_s))
                wait_drained(cluster)
            for i in range(samples):
                raw_single(cluster, lat, slurm_s, str(i))
                wait_drained(cluster)
                time.sleep(IDLE_PAUSE_S)
                labcloud_single(js, lat, 60)
                wait_drained(cluster)
                time.sleep(IDLE_PAUSE_S)
    through = Result(
        "engines: slurm trivial jobs/s",
        backend,
        throughput_metrics(lc, raw, "raw"),
        target=TARGETS["slurm"],
        notes=f"{count} `true` jobs per round (1 CPU, 272 MB in Slurm) submitted by {SUBMIT_CLIENTS} "
        f"threads: labcloud through the API (executor slurm, squeue every {SLURM_POLL_S:g} s, sandbox off, "
        "SQLite), raw as `sbatch --wrap true` with the same options; single-node cluster with "
        f"{cluster.cpus} CPUs; rounds alternate raw, labcloud; medians; {per_round(lc, raw, 'raw')}; "
        "machine_cpu = whole machine busy CPU during the round / N (Slurm daemons, runners, server)",
    )
    sweep = Result(
        "engines: slurm sweep jobs/s",
        backend,
        throughput_metrics(sweeps, raw_arrays, "raw_array")
        | {
            "vs_raw_sbatch_each": round(statistics.median(r.jobs_per_s for r in sweeps) / through_raw(raw), 3)
        },
        target=TARGETS["slurm_sweep"],
        notes=f"{count} `true` jobs per round: labcloud as one sweep (POST /api/v1/sweeps, a grid of "
        f"{count}: it goes to Slurm as one job array), raw as one `sbatch --array=0-{count - 1} --wrap true` "
        "with the same options; rounds alternate with the rounds above; "
        f"{per_round(sweeps, raw_arrays, 'raw array')}; "
        "vs_raw_sbatch_each: the sweep against the raw rounds of single sbatch calls above",
    )
    latency = Result(
        "engines: slurm submit -> running",
        backend,
        latency_metrics(lat, "raw")
        | {
            "raw_command_p50_ms": p(lat.engine_command_ms, 50),
            "raw_command_p95_ms": p(lat.engine_command_ms, 95),
            "raw_slurm_submit_to_start_p50_s": p(slurm_s, 50),
        },
        target=LATENCY_TARGET,
        notes=f"{samples} single jobs each, alternating, on an idle node; labcloud: created_at -> started_at "
        "(taken: -> staging, the runner's take: hand-over, sbatch, Slurm's queue and launch, the runner's "
        "Python start-up; taken_to_running: plan, POST /start); raw: before sbatch -> first squeue (every "
        "20 ms) not PENDING; "
        "raw_command: before sbatch -> the batch script's command ran (`date` into a file); "
        "raw_slurm_submit_to_start: Slurm's SubmitTime -> StartTime, whole seconds only",
    )
    return [through, sweep, latency]


def through_raw(rounds: list[Round]) -> float:
    return statistics.median(r.jobs_per_s for r in rounds)


# -------------------------------------------------------------------------------------------- Celery


_redis_clients: dict[str, redis.Redis] = {}


def plain_true(redis_url: str, key: str) -> None:
    """The baseline task: the same trivial work, then its start and end times onto a Redis list."""
    started = time.time()
    subprocess.run(["true"], check=True)
    ended = time.time()
    client = _redis_clients.get(redis_url)
    if client is None:
        client = _redis_clients.setdefault(redis_url, redis.Redis.from_url(redis_url))
    client.rpush(key, json.dumps([started, ended]))


def plain_app(broker: str) -> Celery:
    """labcloud's Celery app (same configuration) with the baseline task beside its own."""
    app = create_app(broker)
    app.task(name=PLAIN_TASK)(plain_true)
    return app


def plain_worker_main(broker: str, queue: str, concurrency: int, name: str) -> None:
    """A Celery worker for the baseline, started as ``labcloud celery-worker`` starts its own."""
    plain_app(broker).worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--queues={queue}",
            f"--hostname={name}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@contextmanager
def process(command: list[str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=clean_env(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


class Plain:
    """Sends baseline tasks and reads what they pushed."""

    def __init__(self, app: Celery, store: redis.Redis, queue: str, key_prefix: str) -> None:
        self.app, self.store, self.queue, self.key_prefix = app, store, queue, key_prefix

    def send(self, key: str) -> None:
        self.app.send_task(PLAIN_TASK, args=[REDIS, key], queue=self.queue)

    def wait(self, key: str, count: int, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while self.store.llen(key) < count:
            if proc.poll() is not None:
                raise RuntimeError(f"the plain Celery worker exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {self.store.llen(key)} of {count} plain tasks ran in {timeout_s:g} s"
                )
            time.sleep(LATENCY_POLL_S if count == 1 else DONE_POLL_S)

    def records(self, key: str) -> list[tuple[float, float]]:
        return [tuple(json.loads(x)) for x in self.store.lrange(key, 0, -1)]


def plain_round(
    plain: Plain, count: int, tag: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path
) -> Round:
    key = f"{plain.key_prefix}:round-{tag}"
    cpu0, worker0 = busy_cpu_s(), tree_cpu_s(proc.pid)
    t0 = time.time()
    for _ in range(count):
        plain.send(key)
    plain.wait(key, count, timeout_s, proc, log)
    machine, worker = busy_cpu_s() - cpu0, tree_cpu_s(proc.pid) - worker0
    records = plain.records(key)
    if len(records) != count:
        raise RuntimeError(f"{len(records)} plain tasks ran, not {count}")
    return Round(count, t0, max(end for _, end in records), machine, 0.0, worker)


def measure_celery(backend: str, quick: bool) -> list[Result]:
    count = CELERY_JOBS_QUICK if quick else CELERY_JOBS
    rounds = CELERY_ROUNDS_QUICK if quick else CELERY_ROUNDS
    samples = CELERY_LATENCY_QUICK if quick else CELERY_LATENCY
    timeout_s = max(120.0, count * 2.0)
    prefix = f"lcbench-{secrets.token_hex(4)}"
    plain_queue = f"{prefix}.plain"
    store = redis.Redis.from_url(REDIS)
    raw: list[Round] = []
    lc: list[Round] = []
    lat = Latencies()
    with ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(lambda: [store.delete(k) for k in store.scan_iter(match=f"*{prefix}*")])
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="labcloud-bench-celery-")))
        reachable(tmp)
        env = {
            "LABCLOUD_EXECUTOR": "celery",
            "LABCLOUD_CELERY_BROKER_URL": REDIS,
            "LABCLOUD_CELERY_QUEUE_PREFIX": prefix,
        }
        js = stack.enter_context(engine_server(backend, env))
        lc_log, plain_log = tmp / "celery-worker.log", tmp / "plain-worker.log"
        worker = stack.enter_context(
            process(
                [
                    *LABCLOUD, "celery-worker", "--broker", REDIS, "--prefix", prefix,
                    "--concurrency", str(CONCURRENCY), "--name", f"bench@{prefix}",
                    "--work-dir", str(tmp / "runs"), "--sandbox", "off", "--log-level", "warning",
                ],
                lc_log,
            )
        )  # fmt: skip
        plain_worker = stack.enter_context(
            process(
                [
                    sys.executable, "-m", "bench.bench_engines", "plain-worker", REDIS, plain_queue,
                    str(CONCURRENCY), f"plain@{prefix}",
                ],
                plain_log,
                cwd=REPO,
            )
        )  # fmt: skip
        app = plain_app(REDIS)
        stack.callback(app.close)
        plain = Plain(app, store, plain_queue, prefix)
        # warm-up, and proof that both workers are up and consuming
        with js.client() as c:
            for _ in range(2):
                if worker.poll() is not None:
                    raise RuntimeError(f"labcloud celery-worker exited: {lc_log.read_text()[-2000:]}")
                wait_done(c, submit(c), 120)
        for _ in range(2):
            plain.send(f"{prefix}:warmup")
        plain.wait(f"{prefix}:warmup", 2, 120, plain_worker, plain_log)
        for i in range(rounds):
            raw.append(plain_round(plain, count, str(i), timeout_s, plain_worker, plain_log))
            time.sleep(IDLE_PAUSE_S)
            lc.append(labcloud_round(js, count, timeout_s, worker.pid))
            time.sleep(IDLE_PAUSE_S)
        for i in range(samples):
            key = f"{prefix}:latency-{i}"
            sent = time.time()
            plain.send(key)
            plain.wait(key, 1, 60, plain_worker, plain_log)
            lat.engine_ms.append((plain.records(key)[0][0] - sent) * 1000)
            time.sleep(IDLE_PAUSE_S)
            labcloud_single(js, lat, 60)
            time.sleep(IDLE_PAUSE_S)
    through = Result(
        "engines: celery trivial jobs/s",
        backend,
        throughput_metrics(lc, raw, "plain"),
        target=TARGETS["celery"],
        notes=f"{count} jobs per round; labcloud: `true` submitted through the API by {SUBMIT_CLIENTS} "
        f"threads (executor celery, Redis broker, SQLite), one `labcloud celery-worker` (threads, "
        f"concurrency {CONCURRENCY}, sandbox off); plain: a task running subprocess.run(['true']) sent by "
        f"one thread to a worker with labcloud's Celery configuration, same pool and concurrency; both "
        f"workers and the server run throughout, on this machine; rounds alternate plain, labcloud; "
        f"medians; {per_round(lc, raw, 'plain')}; worker_cpu includes the jobs' supervisors",
    )
    latency = Result(
        "engines: celery submit -> running",
        backend,
        latency_metrics(lat, "plain"),
        target=LATENCY_TARGET,
        notes=f"{samples} single jobs each, alternating, {IDLE_PAUSE_S:g} s apart (idle workers); labcloud: "
        "created_at -> started_at (taken: -> staging, the runner's take: hand-over, the broker, the task's "
        "HTTP client, POST /take; taken_to_running: plan, POST /start); plain: send_task -> the task's "
        "first line (time.time() both)",
    )
    return [through, latency]


# ------------------------------------------------------------------------------------------------ run

MEASUREMENTS: dict[str, Callable[[str, bool], list[Result]]] = {
    "slurm": measure_slurm,
    "celery": measure_celery,
}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    return run_all("engines", MEASUREMENTS, TARGETS, backends[:1], quick)


if __name__ == "__main__" and sys.argv[1:2] == ["plain-worker"]:
    plain_worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
