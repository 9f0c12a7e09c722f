"""Prometheus metrics of real ``labcloud serve`` processes: scraped over HTTP, parsed with prometheus-client's
own parser, and changed by real uploads and jobs; two replicas on one database report the same gauges."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from conftest import Server, backend
from jobs_helpers import py, write_app
from labcloud.api.app import create_app
from live_server import Popen, eventually, login_headers, server_env, start_server, stop_server

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    r = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    found: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def gauges(samples: Samples) -> Samples:
    """The database-wide gauges of a scrape."""
    prefixes = ("labcloud_jobs", "labcloud_workers", "labcloud_storage_used_bytes")
    return {key: v for key, v in samples.items() if key[0] in prefixes}


def test_scrape_counts_uploads_jobs_and_requests(server: Server) -> None:
    headers = login_headers(server.url)
    http = httpx.Client(base_url=server.url, headers=headers, timeout=60)
    before = scrape(server.url)
    assert value(before, "labcloud_database_up") == 1
    assert value(before, "labcloud_dispatching") == 1

    data = b"0.1,0.2,0.3\n" * 1000
    r = http.put("/api/v1/files/metrics/trace.csv", content=data)
    assert r.status_code in (200, 201), r.text
    status = str(r.status_code)

    r = http.post("/api/v1/jobs", json={"app": "hello", "params": {"name": "metrics", "times": 1}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = eventually(ended, 120, "the hello job to end")
    assert job["state"] == "succeeded", job
    after = scrape(server.url)

    assert value(after, "labcloud_uploads_total") - value(before, "labcloud_uploads_total") == 1
    assert value(after, "labcloud_upload_bytes_total") - value(before, "labcloud_upload_bytes_total") == len(
        data
    )
    route = "/api/v1/files/{path}"
    put = {"method": "PUT", "route": route, "status": status}
    assert (
        value(after, "labcloud_http_requests_total", **put)
        == value(before, "labcloud_http_requests_total", **put) + 1
    )
    submit = {"method": "POST", "route": "/api/v1/jobs", "status": "201"}
    assert value(after, "labcloud_http_requests_total", **submit) == 1
    assert (
        value(after, "labcloud_http_request_duration_seconds_count", method="POST", route="/api/v1/jobs") == 1
    )
    # one wait and one run of the hello app, one dispatch to the local executor
    assert value(after, "labcloud_job_queue_wait_seconds_count", app="hello") == 1
    assert value(after, "labcloud_job_run_seconds_count", app="hello", outcome="succeeded") == 1
    assert value(after, "labcloud_job_run_seconds_sum", app="hello", outcome="succeeded") > 0
    assert value(after, "labcloud_dispatch_duration_seconds_count", executor="local") == 1
    # the gauges read from the database: nothing waits or runs any more, the upload and the output are stored
    assert value(after, "labcloud_jobs", state="queued", executor="local") == 0
    assert value(after, "labcloud_jobs", state="running", executor="local") == 0
    stored = value(after, "labcloud_storage_used_bytes") - value(before, "labcloud_storage_used_bytes")
    assert stored >= len(data)  # (plus the job's output and log)

    # a request's id: a sane one is kept, anything else replaced, and the answer always carries one
    assert (
        http.get("/healthz", headers={"X-Request-ID": "scrape-test.1"}).headers["x-request-id"]
        == "scrape-test.1"
    )
    replaced = http.get("/healthz", headers={"X-Request-ID": "no spaces allowed"}).headers["x-request-id"]
    assert replaced != "no spaces allowed" and len(replaced) == 32
    unknown = scrape(server.url)
    http.get("/no/such/page/7")
    assert value(
        scrape(server.url), "labcloud_http_requests_total", method="GET", route="(unmatched)", status="404"
    ) == (value(unknown, "labcloud_http_requests_total", method="GET", route="(unmatched)", status="404") + 1)


def test_a_running_job_is_in_the_gauges(server: Server, settings: Any) -> None:
    write_app(
        settings.effective_apps_dir,
        "hold",
        py("""
        import time
        print("waiting", flush=True)
        time.sleep(60)
        """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
    )
    http = httpx.Client(base_url=server.url, headers=login_headers(server.url), timeout=60)
    eventually(lambda: http.get("/api/v1/apps/hold").status_code == 200, 30, "the app to be loaded")
    job_id = http.post("/api/v1/jobs", json={"app": "hold"}).json()["id"]
    eventually(
        lambda: value(scrape(server.url), "labcloud_jobs", state="running", executor="local") == 1,
        60,
        "the running job in the gauge",
    )
    assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    eventually(
        lambda: (
            value(scrape(server.url), "labcloud_job_run_seconds_count", app="hold", outcome="cancelled") == 1
        ),
        60,
        "the cancelled run to be counted",
    )
    assert value(scrape(server.url), "labcloud_jobs", state="running", executor="local") == 0


# -- access ------------------------------------------------------------------------------------------------


def test_metrics_are_for_this_machine_or_the_token(settings: Any, database_url: str, tmp_path: Path) -> None:
    url_db = database_url if backend() == "postgresql" else None
    env = server_env(settings.home, ("m-admin@example.org", "m-admin-password"), url_db)
    url, proc = start_server(env, tmp_path / "open.log")
    try:
        assert httpx.get(f"{url}/metrics").status_code == 200  # from the loopback: yes
        proxied = httpx.get(f"{url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403, proxied.text  # through a proxy on this machine: no
        assert proxied.headers["content-type"] == "application/problem+json"
    finally:
        stop_server(proc)
    env["LABCLOUD_METRICS_TOKEN"] = "scrape-secret-123"
    url, proc = start_server(env, tmp_path / "token.log")
    try:
        for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic scrape-secret-123"}):
            r = httpx.get(f"{url}/metrics", headers=wrong)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert (
            scrape(url, Authorization="Bearer scrape-secret-123")[("labcloud_database_up", frozenset())] == 1
        )
        proxied = httpx.get(
            f"{url}/metrics",
            headers={"Authorization": "Bearer scrape-secret-123", "X-Forwarded-For": "203.0.113.9"},
        )
        assert proxied.status_code == 200  # the token lets it in from anywhere
    finally:
        stop_server(proc)


# -- replicas ----------------------------------------------------------------------------------------------


@pytest.fixture
def two_replicas(settings: Any, database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two ``labcloud serve`` on one database and data dir; jobs go to pull workers (none claims them)."""
    url_db = database_url if backend() == "postgresql" else None
    env = server_env(
        settings.home,
        ("r-admin@example.org", "r-admin-password"),
        url_db,
        executor="pull",
        lease_seconds="30",
    )
    procs: list[Popen] = []
    try:
        urls = []
        for name in ("a", "b"):
            url, proc = start_server(env, tmp_path / f"{name}.log")
            procs.append(proc)
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            stop_server(proc)


def test_two_replicas_report_the_same_gauges(two_replicas: list[str]) -> None:
    a, b = two_replicas
    headers = login_headers(a, "r-admin@example.org", "r-admin-password")
    for _ in range(3):
        r = httpx.post(f"{a}/api/v1/jobs", json={"app": "hello"}, headers=headers)
        assert r.status_code == 201, r.text
    httpx.put(f"{b}/api/v1/files/x.bin", content=b"x" * 4096, headers=headers).raise_for_status()
    lost = httpx.post(f"{b}/api/v1/workers", json={"name": "never-heard"}, headers=headers)
    assert lost.status_code == 201, lost.text
    live = httpx.post(f"{a}/api/v1/workers", json={"name": "beating"}, headers=headers).json()
    beat = httpx.post(
        f"{b}/api/v1/worker/heartbeat", json={}, headers={"Authorization": f"Bearer {live['token']}"}
    )
    assert beat.status_code == 200, beat.text

    seen_a, seen_b = gauges(scrape(a)), gauges(scrape(b))
    assert seen_a == seen_b
    assert value(seen_a, "labcloud_jobs", state="queued", executor="pull") == 3
    assert value(seen_a, "labcloud_workers", state="lost") == 1
    assert value(seen_a, "labcloud_workers", state="active") == 1
    assert value(seen_a, "labcloud_storage_used_bytes") == 4096
    # each replica counts only what it did: the upload went to b
    assert value(scrape(b), "labcloud_uploads_total") == 1
    assert value(scrape(a), "labcloud_uploads_total") == 0
    # exactly one of them dispatches
    assert value(scrape(a), "labcloud_dispatching") + value(scrape(b), "labcloud_dispatching") == 1
    # the heartbeat ages are read from one database too (newest: the beat just sent)
    assert 0 <= value(scrape(a), "labcloud_worker_heartbeat_age_seconds", which="newest") < 30


# -- the Grafana dashboard ---------------------------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "labcloud-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("",)}


def test_the_dashboard_graphs_only_metrics_that_exist(settings: Any) -> None:
    dashboard = json.loads(DASHBOARD.read_text())  # valid JSON
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("jobs by state", "queue wait", "run time", "workers", "requests", "errors", "storage"):
        assert subject in titles, subject
    used = {name for p in panels for t in p["targets"] for name in re.findall(r"labcloud_[a-z_]+", t["expr"])}
    settings.metrics_token = SecretStr("dashboard-check")
    with TestClient(create_app(settings)) as client:
        r = client.get("/metrics", headers={"Authorization": "Bearer dashboard-check"})
        assert r.status_code == 200, r.text
    exposed = {
        family.name + suffix
        for family in text_string_to_metric_families(r.text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    assert used and used <= exposed, used - exposed
