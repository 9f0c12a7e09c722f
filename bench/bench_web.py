"""Web UI: time to first byte of the jobs list page and of a job page with 10,000 jobs in the database.

Target (issue 7): <= 100 ms for both. Measured against a real ``labcloud serve`` with a browser session
(logged in through the login form, the session cookie sent with every request), one client, sequential.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid

import httpx

from bench.bench_jobs import jobs_server, load_jobs, submit
from bench.harness import ADMIN_EMAIL, ADMIN_PASSWORD, Result, latency_summary

JOBS = 10_000
JOBS_QUICK = 2_000
TARGET = "TTFB p50 <= 100 ms with 10,000 jobs"


def browser_login(client: httpx.Client) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, "the login page has no CSRF field"
    r = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    if r.status_code != 303 or "labcloud_session" not in client.cookies:
        raise RuntimeError(f"browser login failed: {r.status_code} {r.text[:300]}")


def ttfb(client: httpx.Client, path: str, times: int) -> list[float]:
    """Seconds from sending the request to the first byte of the body, ``times`` times."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        with client.stream("GET", path) as r:
            body = r.iter_raw()
            next(body, b"")
            samples.append(time.perf_counter() - start)
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code}")
            for _ in body:  # the rest of the page
                pass
    return samples


def run(backends: list[str], quick: bool = False) -> list[Result]:
    count = JOBS_QUICK if quick else JOBS
    times = 30 if quick else 200
    results = []
    for backend in backends:
        with jobs_server(backend) as js, js.client() as api:
            owner = uuid.UUID(api.get("/api/v1/me").json()["id"])
            template = submit(api)
            load_jobs(js, owner, template, count)
            middle = api.get("/api/v1/jobs", params={"limit": 200}).json()["items"][100]["id"]
            with httpx.Client(base_url=js.server.url, timeout=30) as browser:
                browser_login(browser)
                pages = [
                    ("jobs list page", "/jobs", "/jobs"),
                    ("jobs list, live table (htmx poll)", "/jobs/rows", "/jobs/rows"),
                    ("jobs list filtered by state", "/jobs?state=failed", "/jobs?state=failed"),
                    ("job page", "/jobs/{id}", f"/jobs/{middle}"),
                    ("dashboard", "/", "/"),
                ]
                for label, route, path in pages:
                    ttfb(browser, path, 10)  # warm-up
                    samples = ttfb(browser, path, times)
                    metrics = latency_summary(samples) | {"jobs_in_db": float(count + 1)}
                    results.append(
                        Result(
                            f"web: {label} (GET {route})",
                            backend,
                            metrics,
                            target=TARGET,
                            notes=f"time to first byte, {times} sequential requests with a session cookie",
                        )
                    )
                    print(f"{backend:10} {label:40} TTFB median {statistics.median(samples) * 1000:7.2f} ms")
    return results
