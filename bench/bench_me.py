"""Authenticated ``GET /api/v1/me`` with a personal API token: throughput and latency.

A token check must be one indexed lookup (no password hash per request), so this is the floor of every
authenticated call.
"""

from __future__ import annotations

import threading
import time

from bench.harness import Result, Server, latency_summary, running_server

REQUESTS = 3000
CONCURRENCY = 8


def measure(server: Server, requests: int = REQUESTS, concurrency: int = CONCURRENCY) -> Result:
    token = server.admin_token()
    headers = {"Authorization": f"Bearer {token}"}
    with server.client() as warm:
        for _ in range(50):
            warm.get("/api/v1/me", headers=headers).raise_for_status()
    samples: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_thread = requests // concurrency

    def worker() -> None:
        nonlocal errors
        local: list[float] = []
        bad = 0
        with server.client() as c:
            for _ in range(per_thread):
                t0 = time.perf_counter()
                r = c.get("/api/v1/me", headers=headers)
                local.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        with lock:
            samples.extend(local)
            errors += bad

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    metrics = latency_summary(samples) | {
        "req_per_s": round(len(samples) / elapsed, 1),
        "errors": float(errors),
    }
    return Result(
        "GET /api/v1/me (API token)",
        server.backend,
        metrics,
        notes=f"{concurrency} client threads, keep-alive, one server process",
    )


def run(backends: list[str], quick: bool = False) -> list[Result]:
    results = []
    for backend in backends:
        with running_server(backend) as server:
            results.append(measure(server, requests=600 if quick else REQUESTS))
    return results
