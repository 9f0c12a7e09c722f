"""Sweeps: 1,000 trivial jobs (``true``) submitted as one sweep (``POST /api/v1/sweeps``), time until all
have succeeded on the local executor.

Target (issue, 2-core machine): the 1,000 jobs complete in under 15 s.

Against a real ``labcloud serve`` (see harness.py) with the default local capacity (all CPUs; each job
asks for 0.01 of one), after three warm-up jobs. The client polls the sweep's rolled-up progress every
0.5 s; the span is measured by the server's own timestamps too (the sweep's creation to its last job's
end). The CPU time of the server and of its jobs' processes is counted too: on this shared machine other
work changes the wall time from run to run, and their sum / 2 is what two idle cores would need at least.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench_jobs import wait_terminal
from bench.harness import Result, Server, run_all, running_server

APP = "bench-sweep"
APP_YAML = """\
name: bench-sweep
title: Bench sweep
description: Exits at once with status 0, whatever its parameter.
versions:
  "1.0":
    entrypoints:
      run:
        command: ["true"]
        parameters:
          type: object
          properties:
            i: {type: integer, minimum: 0}
        resources: {cpus: 0.01, memory_mb: 16, gpus: 0, timeout_s: 60}
"""
JOBS = 1000
POLL_S = 0.5  # (the server answers each poll: every 100 ms cost it seconds of CPU over a run)
JOBS_QUICK = 200
TARGETS = {"sweep": "1,000 trivial jobs succeed in < 15 s", "sweep_cold": "(the same, for comparison)"}


@contextmanager
def sweep_server(
    backend: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Server, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as apps:
        (Path(apps) / f"{APP}.yaml").write_text(APP_YAML)
        with running_server(backend, {"LABCLOUD_APPS_DIR": apps, **(extra_env or {})}) as server:
            yield server, {"Authorization": f"Bearer {server.admin_token()}"}


def measure_sweep(backend: str, quick: bool, warm: bool = True) -> list[Result]:
    count = JOBS_QUICK if quick else JOBS
    env = {"LABCLOUD_WARM_LAUNCHER": "true" if warm else "false"}
    with sweep_server(backend, env) as (server, headers), server.client(headers=headers) as c:
        for i in range(3):  # warm-up: imports, the sandbox's first start
            r = c.post("/api/v1/jobs", json={"app": APP, "params": {"i": i}})
            r.raise_for_status()
            wait_terminal(c, r.json()["id"])
        body = {"app": APP, "name": "bench", "grid": {"i": list(range(count))}}
        assert server.process is not None
        cpu0 = _cpu(server.process.pid)
        sweep, submit_s, wall_s = run_sweep(c, body, 300, POLL_S)
        own_s, children_s = (b - a for a, b in zip(cpu0, _cpu(server.process.pid), strict=True))
        finished = _last_finished(c, sweep["id"])
    span_s = finished - _ts(sweep["created_at"])
    succeeded = sweep["counts"].get("succeeded", 0)
    return [
        Result(
            ("sweeps: 1,000 trivial jobs as one sweep" if not quick else f"sweeps: {count} trivial jobs")
            + ("" if warm else " (cold supervisors)"),
            backend,
            {
                "jobs": float(sweep["total"]),
                "succeeded": float(succeeded),
                "submit_s": round(submit_s, 3),
                "all_succeeded_s": round(wall_s, 2),
                "server_span_s": round(span_s, 2),
                "jobs_per_s": round(sweep["total"] / wall_s, 1),
                "server_cpu_s": round(own_s, 1),
                "job_processes_cpu_s": round(children_s, 1),
                "cpu_ms_per_job": round((own_s + children_s) * 1000 / sweep["total"], 1),
            },
            target=TARGETS["sweep"],
            notes=f"{count} `true` jobs (cpus 0.01) in one POST /api/v1/sweeps (grid of one parameter), "
            "default local capacity; "
            + (
                "supervisors forked by the warm launcher (the default); "
                if warm
                else "each supervisor a new interpreter (warm_launcher = false); "
            )
            + "all_succeeded_s from the POST to the client seeing the sweep ended "
            "(polled every 0.5 s); server_span_s from the sweep's created_at to its last job's finished_at; "
            "server_cpu_s: the server process's CPU time meanwhile, job_processes_cpu_s its children's (each "
            "job's supervisor, sandbox and command; PostgreSQL's own not counted): on 2 idle cores the run "
            "takes at least their sum / 2",
        )
    ]


def run_sweep(
    c: Any, body: dict[str, Any], timeout_s: float, poll_s: float
) -> tuple[dict[str, Any], float, float]:
    """POST the sweep, then poll it until it has ended: the sweep as last seen, the POST's seconds, and the
    seconds from the POST until the sweep was seen ended."""
    start = time.perf_counter()
    r = c.post("/api/v1/sweeps", json=body, timeout=120)
    submit_s = time.perf_counter() - start
    if r.status_code != 201:
        raise RuntimeError(f"submit sweep: {r.status_code} {r.text[:500]}")
    sweep: dict[str, Any] = r.json()
    deadline = time.monotonic() + timeout_s
    while sweep["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sweep did not end in {timeout_s:g} s: {sweep['counts']}")
        time.sleep(poll_s)
        sweep = c.get(f"/api/v1/sweeps/{sweep['id']}").json()
    return sweep, submit_s, time.perf_counter() - start


def _cpu(pid: int) -> tuple[float, float]:
    """The CPU seconds of a process, and of its children: those that ended, and the ones that live (the
    launcher) with their own ended children (the supervisors it forked) (``/proc/<pid>/stat``)."""
    own, ended = _times(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own, ended + sum(sum(_times(int(child))) for child in children)


def _times(pid: int) -> tuple[float, float]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
    return utime + stime, cutime + cstime


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def _last_finished(c: Any, sweep_id: str) -> float:
    latest = 0.0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = c.get(f"/api/v1/sweeps/{sweep_id}/jobs", params=params).json()
        latest = max([latest, *(_ts(j["finished_at"]) for j in page["items"] if j["finished_at"])])
        cursor = page["next_cursor"]
        if not cursor:
            return latest


def run(backends: list[str], quick: bool = False) -> list[Result]:
    cold = partial(measure_sweep, warm=False)
    return run_all("sweeps", {"sweep": measure_sweep, "sweep_cold": cold}, TARGETS, backends, quick)
