"""Jobs under load: a page of queued jobs against the same page once they ended, and many clients at once
submitting and listing.

Targets (issue, 2-core machine): the newest 100 of 1,000 mostly queued jobs cost no more than the same page
of ended jobs; 16 clients, 70% submits and 30% listings of the newest 50, for 30 s: >= 400 requests/s,
listing p99 <= 100 ms, no errors.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from bench.bench_jobs import TRUE_APP, capacity_held, jobs_server, submit, threaded
from bench.harness import Result, latency_summary

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


def measure_mixed(backend: str, quick: bool) -> list[Result]:
    """Many clients at once, each a keep-alive connection: a submit 70% of the time, else the newest 50."""
    seconds = 8.0 if quick else MIXED_SECONDS
    submits: list[float] = []
    lists: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    with jobs_server(backend, HOLD) as js, capacity_held(js):
        with js.client() as c:
            for _ in range(50):
                submit(c)
        stop = time.monotonic() + seconds

        def client(i: int) -> None:
            rng = random.Random(i)
            mine: dict[str, list[float]] = {"submit": [], "list": []}
            failed: list[str] = []
            with js.client() as wc:
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
                submits.extend(mine["submit"])
                lists.extend(mine["list"])
                errors.extend(failed)

        elapsed = threaded(MIXED_CLIENTS, client)
    s, li = latency_summary(submits), latency_summary(lists)
    metrics: dict[str, Any] = {
        "requests_per_s": round((len(submits) + len(lists)) / elapsed, 1),
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
