"""Jobs under load: a page of queued jobs against the same page once they ended, and many clients at once
submitting and listing.

Targets (issue, 2-core machine): the newest 100 of 1,000 mostly queued jobs cost no more than the same page
of ended jobs; 16 clients, 70% submits and 30% listings of the newest 50, for 30 s: >= 400 requests/s,
listing p99 <= 100 ms, no errors.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.bench_jobs import TRUE_APP, capacity_held, jobs_server, submit, threaded
from bench.harness import Result, Server, latency_summary, wait_ready
from testing.daemons import free_port

HOLD = {"LABCLOUD_LOCAL_CPUS": "1"}
QUEUED_JOBS = 1000
MIXED_CLIENTS = 16
MIXED_SECONDS = 30.0
MIXED_SUBMIT_SHARE = 0.7
TARGETS = {
    "list-queued": "page of queued jobs <= the same page of ended jobs",
    "mixed": f">= 400 requests/s, listing p99 <= 100 ms, 0 errors ({MIXED_CLIENTS} clients)",
}


def measure_list_queued(backend: str, quick: bool) -> list[Result]:
    """1,000 queued jobs (capacity held); the newest 100 timed in alternating rounds while they are queued
    and after they are marked ended in the database (succeeded, one attempt), on one server."""
    count = 300 if quick else QUEUED_JOBS
    rounds, per_round = (2, 10) if quick else (5, 30)
    queued: list[float] = []
    ended: list[float] = []
    with jobs_server(backend, HOLD) as js, capacity_held(js):

        def fill(i: int) -> None:
            with js.client() as wc:
                for _ in range(count // 4):
                    submit(wc)

        threaded(4, fill)
        to_ended = (
            "UPDATE jobs SET state = 'succeeded', attempts = 1, message = '0 output files' "
            "WHERE app = ? AND state = 'queued'"
        )
        to_queued = (
            "UPDATE jobs SET state = 'queued', attempts = 0, message = 'submitted' "
            "WHERE app = ? AND state = 'succeeded'"
        )
        with js.client() as c:
            params = {"limit": 100}
            for _ in range(10):
                c.get("/api/v1/jobs", params=params).raise_for_status()
            for _ in range(rounds):
                for samples, flip in ((queued, to_ended), (ended, to_queued)):
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        r = c.get("/api/v1/jobs", params=params)
                        samples.append(time.perf_counter() - t0)
                        r.raise_for_status()
                    js.execute(flip, (TRUE_APP,))
    q, e = latency_summary(queued), latency_summary(ended)
    return [
        Result(
            "jobs: GET /api/v1/jobs?limit=100, queued vs ended",
            backend,
            {"queued_p50_ms": q["p50_ms"], "ended_p50_ms": e["p50_ms"], "queued_p99_ms": q["p99_ms"]}
            | {"ratio": round(q["p50_ms"] / e["p50_ms"], 2), "n_each": q["n"]},
            target=TARGETS["list-queued"],
            notes=f"{count} `true` jobs submitted with all local CPUs held (they stay queued); {rounds} "
            f"alternating rounds of {per_round} first pages while queued and once marked succeeded in the "
            "database",
        )
    ]


@dataclass
class Load:
    """What the mixed clients saw: each submit's and each listing's seconds, the failures, the wall time."""

    submits: list[float] = field(default_factory=list)
    lists: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return round((len(self.submits) + len(self.lists)) / self.elapsed, 1)


def mixed_load(urls: list[str], headers: dict[str, str], seconds: float) -> Load:
    """``MIXED_CLIENTS`` threads for ``seconds``, each a keep-alive connection to one of ``urls`` in turn: a
    submit 70% of the time, else the newest 50."""
    load = Load()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        mine: dict[str, list[float]] = {"submit": [], "list": []}
        failed: list[str] = []
        with httpx.Client(base_url=urls[i % len(urls)], headers=headers, timeout=30) as wc:
            while time.monotonic() < stop:
                kind = "submit" if rng.random() < MIXED_SUBMIT_SHARE else "list"
                t0 = time.perf_counter()
                try:
                    if kind == "submit":
                        r = wc.post("/api/v1/jobs", json={"app": TRUE_APP})
                    else:
                        r = wc.get("/api/v1/jobs", params={"limit": 50})
                    ok = r.status_code in (200, 201)
                    why = f"{kind}: {r.status_code} {r.text[:200]}"
                except Exception as exc:  # a refused or dropped connection counts as an error
                    ok, why = False, f"{kind}: {exc!r}"
                mine[kind].append(time.perf_counter() - t0)
                if not ok:
                    failed.append(why)
        with lock:
            load.submits.extend(mine["submit"])
            load.lists.extend(mine["list"])
            load.errors.extend(failed)

    load.elapsed = threaded(MIXED_CLIENTS, client)
    return load


def measure_mixed(backend: str, quick: bool) -> list[Result]:
    """Many clients at once, each a keep-alive connection: a submit 70% of the time, else the newest 50."""
    seconds = 8.0 if quick else MIXED_SECONDS
    with jobs_server(backend, HOLD) as js, capacity_held(js):
        with js.client() as c:
            for _ in range(50):
                submit(c)
        load = mixed_load([js.server.url], js.headers, seconds)
    errors = load.errors
    s, li = latency_summary(load.submits), latency_summary(load.lists)
    metrics: dict[str, Any] = {
        "requests_per_s": load.requests_per_s,
        "errors": float(len(errors)),
        "submit_p50_ms": s["p50_ms"],
        "submit_p99_ms": s["p99_ms"],
        "list_p50_ms": li["p50_ms"],
        "list_p99_ms": li["p99_ms"],
        "list_mean_ms": li["mean_ms"],
    }
    return [
        Result(
            f"jobs: {MIXED_CLIENTS} clients, 70% submit / 30% newest 50",
            backend,
            metrics,
            target=TARGETS["mixed"],
            notes=f"{seconds:g} s, {MIXED_CLIENTS} threads with a keep-alive connection each, all local CPUs "
            "held (submitted jobs stay queued, the dispatcher wakes for each)"
            + (f"; first error: {errors[0]}" if errors else ""),
        )
    ]


# A second replica of the same server (several replicas share one database; one leads).
REPLICA_ROUNDS = 2
REPLICA_SECONDS = 15.0


@contextmanager
def second_replica(server: Server) -> Iterator[str]:
    """Another ``labcloud serve`` on the same database and home: its address."""
    port = free_port()
    cli = [sys.executable, "-m", "labcloud.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cli, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, "the second replica did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure_mixed_replicas(backend: str, quick: bool) -> list[Result]:
    """The mixed load against one replica and against two on one database (the clients split between
    them), in alternating rounds of one run: what a second server process buys on this machine."""
    seconds = 5.0 if quick else REPLICA_SECONDS
    rounds: dict[str, list[Load]] = {"one": [], "two": []}
    with jobs_server(backend, HOLD) as js, capacity_held(js), second_replica(js.server) as other:
        with js.client() as c:
            for _ in range(50):
                submit(c)
        for _ in range(REPLICA_ROUNDS):
            rounds["one"].append(mixed_load([js.server.url], js.headers, seconds))
            rounds["two"].append(mixed_load([js.server.url, other], js.headers, seconds))

    def median(kind: str, value: Any) -> float:
        return round(statistics.median(value(load) for load in rounds[kind]), 1)

    metrics = {
        f"{kind}_{name}": median(kind, value)
        for kind in rounds
        for name, value in (
            ("requests_per_s", lambda load: load.requests_per_s),
            ("list_p99_ms", lambda load: latency_summary(load.lists)["p99_ms"]),
        )
    }
    metrics["errors"] = float(sum(len(load.errors) for loads in rounds.values() for load in loads))
    metrics["ratio"] = round(metrics["two_requests_per_s"] / metrics["one_requests_per_s"], 2)
    return [
        Result(
            f"jobs: {MIXED_CLIENTS} clients, one replica vs two",
            backend,
            metrics,
            target="none of its own (the 400 requests/s of the mixed load)",
            notes=f"the mixed load ({MIXED_CLIENTS} clients, 70% submit / 30% newest 50) for {seconds:g} s, "
            f"{REPLICA_ROUNDS} alternating rounds against one `labcloud serve` and against two on the same "
            "database and home (client i talks to replica i mod 2); medians of the rounds; all local CPUs "
            "held, so submitted jobs stay queued",
        )
    ]
