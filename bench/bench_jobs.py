"""Jobs: submit latency and rate, dispatch latency, end-to-end throughput, and listing among 1M jobs.

Targets (issue, 2-core machine): submit p50 <= 5 ms; dispatch (queued -> running, idle capacity)
p50 <= 50 ms; >= 100 trivial jobs/s end to end; ``GET /api/v1/jobs`` (page of 50) p50 <= 15 ms with
1,000,000 jobs in the database.

Every measurement runs against a real ``labcloud serve`` (see harness.py). Two tiny apps are written to
a private apps dir (``LABCLOUD_APPS_DIR``): ``bench-true`` runs ``true`` and ``bench-hold`` sleeps, to
occupy all local capacity so that submitted jobs stay queued.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.harness import Result, Server, latency_summary, run_all, running_server
from labcloud.db.types import new_id
from labcloud.services.pagination import encode_cursor

TRUE_APP = "bench-true"
HOLD_APP = "bench-hold"
HOLD_CPUS = 1.0
APPS: dict[str, str] = {
    TRUE_APP: """\
name: bench-true
title: Bench true
description: Exits at once with status 0.
versions:
  "1.0":
    entrypoints:
      run:
        command: ["true"]
        resources: {cpus: 0.01, memory_mb: 16, gpus: 0, timeout_s: 60}
""",
    HOLD_APP: f"""\
name: bench-hold
title: Bench hold
description: Sleeps, holding all local CPUs, so that other jobs wait in the queue.
versions:
  "1.0":
    entrypoints:
      run:
        command: [sleep, "900"]
        resources: {{cpus: {HOLD_CPUS:g}, memory_mb: 16, gpus: 0, timeout_s: 1200}}
""",
}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_QUERY = (
    "/api/v1/jobs?state=queued&state=staging&state=running&state=finishing&state=cancelling&limit=1"
)

TARGETS = {
    "submit": "p50 <= 5 ms",
    "quota": "quota check adds <= 1 ms to submit p50",
    "dispatch": "p50 <= 50 ms",
    "end-to-end": ">= 100 jobs/s, all succeeded",
    "list": "p50 <= 15 ms with 1,000,000 jobs",
}
SUBMIT_SEQUENTIAL = 1000
SUBMIT_CONCURRENT = 2000
SUBMIT_CLIENTS = 8
DISPATCH_JOBS = 50
E2E_JOBS = 300
E2E_CLIENTS = 4
E2E_LOCAL_CPUS = 8
LIST_ROWS = 1_000_000
LIST_ROWS_QUICK = 50_000
LOAD_BATCH = 20_000


@dataclass
class JobsServer:
    server: Server
    headers: dict[str, str]

    @property
    def backend(self) -> str:
        return self.server.backend

    def client(self) -> httpx.Client:
        return self.server.client(headers=self.headers)

    @property
    def sqlite_path(self) -> Path:
        return self.server.home / "labcloud.sqlite3"

    @property
    def pg_dsn(self) -> str:
        return self.server.env["LABCLOUD_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)

    @contextmanager
    def database(self) -> Iterator[Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]]:
        """One connection to the server's database, behind its back: ``query(sql, params)``, ``?`` style.

        Each statement commits at once. For setup, cleanup and timing the bare query only.
        """
        if self.backend == "sqlite":
            lite = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)

            def lite_query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                return lite.execute(sql, params).fetchall()

            try:
                yield lite_query
            finally:
                lite.close()
            return
        with psycopg.connect(self.pg_dsn, autocommit=True) as pg:

            def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                cur = pg.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []

            yield query

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.database() as query:
            return query(sql, params)


@contextmanager
def jobs_server(backend: str, extra_env: dict[str, str] | None = None) -> Iterator[JobsServer]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as apps:
        for name, text in APPS.items():
            (Path(apps) / f"{name}.yaml").write_text(text)
        env = {"LABCLOUD_APPS_DIR": apps, **unsandboxed_as_root(), **(extra_env or {})}
        with running_server(backend, env) as server:
            yield JobsServer(server, {"Authorization": f"Bearer {server.admin_token()}"})


def unsandboxed_as_root() -> dict[str, str]:
    """Root without bubblewrap refuses every job (sandbox "auto"): there the jobs run as the job user,
    unsandboxed (sandbox "off"), which changes nothing the server does per request."""
    if os.geteuid() == 0 and shutil.which("bwrap") is None:
        return {"LABCLOUD_SANDBOX": "off"}
    return {}


# ------------------------------------------------------------------------------------------- helpers


def submit(client: httpx.Client, app: str = TRUE_APP) -> dict[str, Any]:
    r = client.post("/api/v1/jobs", json={"app": app})
    if r.status_code != 201:
        raise RuntimeError(f"submit {app}: {r.status_code} {r.text[:500]}")
    job: dict[str, Any] = r.json()
    return job


def wait_for(
    client: httpx.Client,
    job_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 60,
    queued_timeout_s: float = 10,
    first_poll_s: float = 0.0,
    poll_s: float = 0.01,
) -> dict[str, Any]:
    """Poll the job until ``done``; a job nobody picks up within ``queued_timeout_s`` is an error."""
    start = time.monotonic()
    time.sleep(first_poll_s)
    while True:
        r = client.get(f"/api/v1/jobs/{job_id}")
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        if done(job):
            return job
        waited = time.monotonic() - start
        if job["state"] == "queued" and waited > queued_timeout_s:
            raise RuntimeError(
                f"job {job_id} was not dispatched within {queued_timeout_s:g} s ({job['message']}); "
                "is the dispatcher failing? Keep the server logs with LABCLOUD_BENCH_SERVER_LOGS=<dir>"
            )
        if waited > timeout_s:
            raise RuntimeError(f"job {job_id} still {job['state']} after {timeout_s:g} s: {job['message']}")
        time.sleep(poll_s)


def wait_terminal(
    client: httpx.Client, job_id: str, timeout_s: float = 60, **polling: float
) -> dict[str, Any]:
    return wait_for(client, job_id, lambda j: j["state"] in TERMINAL, timeout_s, **polling)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ms_between(a: str, b: str) -> float:
    return (ts(b) - ts(a)).total_seconds() * 1000


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def threaded(workers: int, target: Callable[[int], None]) -> float:
    """Run ``target(i)`` in ``workers`` threads; return the wall time. Re-raises the first failure."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


# -------------------------------------------------------------------------------------------- submit


@contextmanager
def capacity_held(js: JobsServer) -> Iterator[None]:
    """All local CPUs taken by a sleeping job while the block runs: submitted jobs stay queued.

    (LABCLOUD_LOCAL_CPUS below the job's cpus does not do it: submit refuses a job larger than the
    installation, and anything that passes that check fits an idle executor.)

    Afterwards the queued jobs are cancelled in the database (thousands of cancels through the API
    would take longer than the measurement) and the sleeper through the API, so no process outlives
    the server.
    """
    with js.client() as c:
        hold = submit(c, HOLD_APP)
        try:
            wait_for(c, hold["id"], lambda j: j["state"] == "running", 30)
            yield
            ran = c.get("/api/v1/jobs", params={"state": ["succeeded", "failed"], "limit": 1}).json()
            if ran["items"]:
                raise RuntimeError("a job ran although capacity was held: the submit numbers are off")
        finally:
            js.execute("UPDATE jobs SET state = 'cancelled' WHERE state = 'queued' AND app = ?", (TRUE_APP,))
            c.post(f"/api/v1/jobs/{hold['id']}/cancel")
            wait_terminal(c, hold["id"], 30)


def measure_submit(backend: str, quick: bool) -> list[Result]:
    sequential = 200 if quick else SUBMIT_SEQUENTIAL
    concurrent = 400 if quick else SUBMIT_CONCURRENT
    samples: list[float] = []
    conc_samples: list[float] = []
    lock = threading.Lock()
    per_client = concurrent // SUBMIT_CLIENTS
    with jobs_server(backend, {"LABCLOUD_LOCAL_CPUS": f"{HOLD_CPUS:g}"}) as js, capacity_held(js):
        with js.client() as c:
            for _ in range(20):
                submit(c)
            for _ in range(sequential):
                t0 = time.perf_counter()
                r = c.post("/api/v1/jobs", json={"app": TRUE_APP})
                samples.append(time.perf_counter() - t0)
                if r.status_code != 201 or r.json()["state"] != "queued":
                    raise RuntimeError(f"submit: {r.status_code} {r.text[:500]}")

        def worker(_: int) -> None:
            local: list[float] = []
            with js.client() as wc:
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    r = wc.post("/api/v1/jobs", json={"app": TRUE_APP})
                    local.append(time.perf_counter() - t0)
                    if r.status_code != 201:
                        raise RuntimeError(f"submit: {r.status_code} {r.text[:500]}")
            with lock:
                conc_samples.extend(local)

        elapsed = threaded(SUBMIT_CLIENTS, worker)

    how = (
        "dispatch on, but all local CPUs held by a sleeping job (LABCLOUD_LOCAL_CPUS=1), so every job stays "
        "queued while the dispatcher still wakes per submit; app runs `true`; POST /api/v1/jobs {app}"
    )
    return [
        Result(
            "jobs: submit latency (1 client)",
            backend,
            latency_summary(samples),
            target=TARGETS["submit"],
            notes=f"{how}; one keep-alive connection, sequential, after 20 warm-up submits",
        ),
        Result(
            f"jobs: submit rate ({SUBMIT_CLIENTS} clients)",
            backend,
            {"submits_per_s": round(len(conc_samples) / elapsed, 1)} | latency_summary(conc_samples),
            target="none of its own (>= 100 jobs/s end to end needs >= 100 submits/s)",
            notes=f"{how}; {SUBMIT_CLIENTS} threads, one keep-alive connection each; "
            f"queue held {sequential + 20} jobs at start",
        ),
    ]


# ------------------------------------------------------------------------------------------ dispatch


def measure_dispatch(backend: str, quick: bool) -> list[Result]:
    count = 15 if quick else DISPATCH_JOBS
    total: list[float] = []
    pickup: list[float] = []
    launch: list[float] = []
    states: dict[str, int] = {}
    with jobs_server(backend) as js, js.client() as c:
        for _ in range(3):  # warm-up: first sandbox launch, first imports
            wait_terminal(c, submit(c)["id"])
        for _ in range(count):
            # Server timestamps make the result independent of polling; polling seldom keeps the
            # client's GETs from competing with the dispatch for the two cores.
            job = wait_terminal(c, submit(c)["id"], first_poll_s=0.15, poll_s=0.05)
            states[job["state"]] = states.get(job["state"], 0) + 1
            if job["started_at"] is None:
                continue
            total.append(ms_between(job["created_at"], job["started_at"]))
            events = c.get(f"/api/v1/jobs/{job['id']}/events").json()
            staging = next(e["at"] for e in events if e["to_state"] == "staging")
            pickup.append(ms_between(job["created_at"], staging))
            launch.append(ms_between(staging, job["started_at"]))
    metrics = latency_summary([x / 1000 for x in total]) | {
        "queued_to_staging_p50_ms": p50(pickup),
        "staging_to_running_p50_ms": p50(launch),
        "succeeded": float(states.get("succeeded", 0)),
    }
    return [
        Result(
            "jobs: dispatch latency",
            backend,
            metrics,
            target=TARGETS["dispatch"],
            notes=f"{count} `true` jobs one at a time, default capacity (all CPUs), idle server; "
            "created_at -> started_at of the job (server clock); split at the queued->staging event "
            "(dispatcher pickup) and staging->running (stage + launch the sandboxed supervisor); "
            "client polls the job 150 ms after submit, then every 50 ms",
        )
    ]


# ---------------------------------------------------------------------------------------- end to end


def measure_end_to_end(backend: str, quick: bool) -> list[Result]:
    count = 100 if quick else E2E_JOBS
    ids: list[str] = []
    lock = threading.Lock()
    with jobs_server(backend, {"LABCLOUD_LOCAL_CPUS": str(E2E_LOCAL_CPUS)}) as js:
        with js.client() as c:
            for _ in range(3):
                wait_terminal(c, submit(c)["id"])

        def worker(i: int) -> None:
            mine = count // E2E_CLIENTS + (i < count % E2E_CLIENTS)
            with js.client() as wc:
                got = [submit(wc)["id"] for _ in range(mine)]
            with lock:
                ids.extend(got)

        start = time.perf_counter()
        submit_s = threaded(E2E_CLIENTS, worker)
        deadline = time.monotonic() + max(120.0, count * 0.5)
        with js.client() as c:
            while c.get(ACTIVE_QUERY).json()["items"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{count} trivial jobs did not all end before the deadline")
                time.sleep(0.05)
            wall_s = time.perf_counter() - start
            wanted = set(ids)
            jobs: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
                page = c.get("/api/v1/jobs", params=params).json()
                jobs += [j for j in page["items"] if j["id"] in wanted]
                cursor = page["next_cursor"]
                if not cursor:
                    break
    succeeded = sum(j["state"] == "succeeded" for j in jobs)
    first_created = min(ts(j["created_at"]) for j in jobs)
    last_finished = max(ts(j["finished_at"]) for j in jobs if j["finished_at"])
    span_s = (last_finished - first_created).total_seconds()
    per_job = [ms_between(j["created_at"], j["finished_at"]) for j in jobs if j["finished_at"]]
    result = Result(
        "jobs: end-to-end trivial jobs",
        backend,
        {
            "jobs": float(len(jobs)),
            "succeeded": float(succeeded),
            "jobs_per_s": round(len(jobs) / span_s, 1),
            "span_s": round(span_s, 2),
            "submit_phase_s": round(submit_s, 2),
            "client_wall_s": round(wall_s, 2),
            "created_to_finished_p50_ms": p50(per_job),
        },
        target=TARGETS["end-to-end"],
        notes=f"{count} `true` jobs (cpus 0.01) submitted by {E2E_CLIENTS} threads as fast as possible, "
        f"LABCLOUD_LOCAL_CPUS={E2E_LOCAL_CPUS}; jobs/s = N / (last finished_at - first created_at); "
        "client polls for active jobs every 50 ms",
    )
    return [result]


# -------------------------------------------------------------------------------------------- listing


JOB_COLUMNS = [
    "id", "owner_id", "project_id", "name", "app", "version", "entrypoint", "spec", "spec_hash", "params",
    "inputs", "env", "resources", "tags", "state", "reason", "message", "exit_code", "progress", "attempts",
    "max_attempts", "executor", "executor_ref", "usage", "rerun_of", "created_at", "updated_at", "started_at",
    "finished_at",
]  # fmt: skip
ENDINGS = (  # state, reason, message, exit_code; by row number modulo 100
    [("succeeded", None, "0 output files", 0)] * 90
    + [("failed", "app_error", "the command exited with code 1", 1)] * 7
    + [("cancelled", None, "cancelled before it started", None)] * 3
)


def job_rows(
    owner: uuid.UUID, template: dict[str, Any], count: int, batch: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Terminal jobs like ``template`` (a real job of the server), oldest first, in batches of tuples.

    Values are Python objects except the JSON columns, which are already-serialized text; ids come
    from ``new_id()``, so they increase with created_at as they do for submitted jobs.
    """
    usage = {"wall_s": 0.004, "cpu_s": 0.001, "peak_memory_mb": 1.2}
    fixed = {
        "owner_id": owner,
        "project_id": uuid.UUID(template["project_id"]),
        "app": template["app"],
        "version": template["version"],
        "entrypoint": template["entrypoint"],
        "spec": json.dumps(template["spec"]),
        "spec_hash": template["spec_hash"],
        "params": json.dumps(template["params"]),
        "inputs": json.dumps(template["inputs"]),
        "env": "{}",
        "resources": json.dumps(template["resources"]),
        "tags": "{}",
        "attempts": 1,
        "max_attempts": template["max_attempts"],
        "executor": template["executor"],
        "executor_ref": None,
        "usage": json.dumps(usage),
        "rerun_of": None,
    }
    done = 0
    while done < count:
        rows = []
        for i in range(done, min(count, done + batch)):
            state, reason, message, exit_code = ENDINGS[i % 100]
            created = datetime.now(UTC)
            finished = created + timedelta(milliseconds=40)
            values = fixed | {
                "id": new_id(),
                "name": f"bench-{i}",
                "state": state,
                "reason": reason,
                "message": message,
                "exit_code": exit_code,
                "progress": 1.0 if state == "succeeded" else None,
                "created_at": created,
                "updated_at": finished,
                "started_at": created + timedelta(milliseconds=30) if state != "cancelled" else None,
                "finished_at": finished,
            }
            rows.append(tuple(values[col] for col in JOB_COLUMNS))
        done += len(rows)
        yield rows


def _sqlite_value(value: Any) -> Any:
    """What SQLAlchemy stores on SQLite: Uuid as 32 hex digits, UTC datetimes naive as ISO with a space."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def load_jobs(js: JobsServer, owner: uuid.UUID, template: dict[str, Any], count: int) -> None:
    """Insert ``count`` terminal jobs straight into the server's database, as fast as the backend allows."""
    if js.backend == "sqlite":
        conn = sqlite3.connect(js.sqlite_path, timeout=30)
        try:
            conn.execute("PRAGMA synchronous=OFF")  # this connection only; the server keeps NORMAL
            sql = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
            for rows in job_rows(owner, template, count, LOAD_BATCH):
                conn.executemany(sql, ([_sqlite_value(v) for v in row] for row in rows))
                conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return
    with psycopg.connect(js.pg_dsn, autocommit=True) as pg:
        with pg.cursor() as cur, cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
            for rows in job_rows(owner, template, count, LOAD_BATCH):
                for row in rows:
                    copy.write_row(row)
        # What autovacuum would soon do after a bulk load; done now so the timing does not depend on it.
        pg.execute("VACUUM (ANALYZE) jobs")


def timed_gets(client: httpx.Client, path: str, params: dict[str, Any], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        samples.append(time.perf_counter() - t0)
        r.raise_for_status()
    return samples


def walk_pages(client: httpx.Client, params: dict[str, Any], pages: int) -> list[float]:
    """Follow next_cursor from the first page for ``pages`` pages; time each request."""
    samples = []
    cursor: str | None = None
    for _ in range(pages):
        t0 = time.perf_counter()
        r = client.get("/api/v1/jobs", params=params | ({"cursor": cursor} if cursor else {}))
        samples.append(time.perf_counter() - t0)
        r.raise_for_status()
        body = r.json()
        if len(body["items"]) != params["limit"]:
            raise RuntimeError(f"short page ({len(body['items'])} items) in a listing of many jobs")
        cursor = body["next_cursor"]
    return samples


def measure_list(backend: str, quick: bool) -> list[Result]:
    count = LIST_ROWS_QUICK if quick else LIST_ROWS
    how = "sqlite3 executemany, synchronous=OFF" if backend == "sqlite" else "COPY, then VACUUM ANALYZE"
    results = []
    with jobs_server(backend) as js, js.client() as c:
        owner = uuid.UUID(c.get("/api/v1/me").json()["id"])
        template = submit(c)  # a real job's values for the rows; whether it runs does not matter
        t0 = time.perf_counter()
        load_jobs(js, owner, template, count)
        load_s = time.perf_counter() - t0
        total = js.execute("SELECT count(*) FROM jobs WHERE owner_id = ?", (_owner_param(js, owner),))[0][0]
        # A cursor in the middle of the table: keyset paging should cost the same at any depth.
        middle = js.execute(f"SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET {count // 2}")[0][0]
        middle_cursor = encode_cursor(uuid.UUID(str(middle)))
        for label, extra in (("", {}), ("state=succeeded&", {"state": "succeeded"})):
            params = {"limit": 50} | extra
            timed_gets(c, "/api/v1/jobs", params, 20)  # warm-up
            first = timed_gets(c, "/api/v1/jobs", params, 100)
            deeper = walk_pages(c, params, 60)
            middle_pages = timed_gets(c, "/api/v1/jobs", params | {"cursor": middle_cursor}, 40)
            samples = first + deeper + middle_pages
            metrics = latency_summary(samples) | {
                "first_page_p50_ms": p50([x * 1000 for x in first]),
                "next_pages_p50_ms": p50([x * 1000 for x in deeper]),
                "mid_table_p50_ms": p50([x * 1000 for x in middle_pages]),
            }
            metrics["sql_p50_ms"] = p50(sql_samples_ms(js, owner, extra.get("state")))
            if not label:
                metrics |= {"jobs_in_db": float(total), "insert_s": round(load_s, 1)}
            results.append(
                Result(
                    f"jobs: GET /api/v1/jobs?{label}limit=50",
                    backend,
                    metrics,
                    target=TARGETS["list"],
                    notes=f"{count:,} terminal jobs of the bench user inserted directly ({how}, "
                    f"{LOAD_BATCH:,} rows a batch); 90% succeeded, 7% failed, 3% cancelled; one client: "
                    "100 x first page, 60 pages following next_cursor, 40 x a mid-table cursor; sql_p50_ms: "
                    "the first page (51 rows, every column) on the bare driver; psycopg parses JSON columns",
                )
            )
    return results


def _owner_param(js: JobsServer, owner: uuid.UUID) -> Any:
    return owner.hex if js.backend == "sqlite" else owner


def sql_samples_ms(js: JobsServer, owner: uuid.UUID, state: str | None, times: int = 100) -> list[float]:
    """The first page's query (every column, 51 rows) on the bare driver, without the server around it."""
    where = "owner_id = ?" + (" AND state = ?" if state else "")
    params = (_owner_param(js, owner), *([state] if state else []))
    sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE {where} ORDER BY id DESC LIMIT 51"
    samples = []
    with js.database() as query:
        for i in range(times + 10):
            t0 = time.perf_counter()
            rows = query(sql, params)
            if i >= 10:  # the first ones warm the connection and the cache
                samples.append((time.perf_counter() - t0) * 1000)
            if len(rows) != 51:
                raise RuntimeError(f"the first-page query returned {len(rows)} rows")
    return samples


# ------------------------------------------------------------------------------------------------ run


def measure_quota_cost(backend: str, quick: bool) -> list[Result]:
    """What a project's quotas add to a submit: rounds of submits alternate, on one server, between a
    project without quotas and one with cpu_hours, concurrent_jobs and jobs_per_day quotas (room to
    spare), so both see the same machine; the medians of each side and their difference."""
    per_round, rounds = (50, 4) if quick else (200, 6)
    plain: list[float] = []
    held: list[float] = []
    with (
        jobs_server(backend, {"LABCLOUD_LOCAL_CPUS": f"{HOLD_CPUS:g}"}) as js,
        capacity_held(js),
        js.client() as c,
    ):
        if True:  # (one block: the server, its capacity held, one client)
            for slug in ("bench-plain", "bench-quota"):
                r = c.post("/api/v1/projects", json={"name": slug, "slug": slug})
                if r.status_code != 201:
                    raise RuntimeError(f"project {slug}: {r.status_code} {r.text[:300]}")
            for resource, limit in (("cpu_hours", 1e9), ("concurrent_jobs", 1e9), ("jobs_per_day", 1e9)):
                r = c.put(f"/api/v1/projects/bench-quota/quotas/{resource}", json={"limit": limit})
                if r.status_code != 200:
                    raise RuntimeError(f"quota {resource}: {r.status_code} {r.text[:300]}")
            for slug in ("bench-plain", "bench-quota"):  # warm-up
                for _ in range(20):
                    c.post("/api/v1/jobs", json={"app": TRUE_APP, "project": slug}).raise_for_status()
            for _ in range(rounds):
                for slug, samples in (("bench-plain", plain), ("bench-quota", held)):
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        r = c.post("/api/v1/jobs", json={"app": TRUE_APP, "project": slug})
                        samples.append(time.perf_counter() - t0)
                        if r.status_code != 201:
                            raise RuntimeError(f"submit: {r.status_code} {r.text[:500]}")
            js.execute("UPDATE jobs SET state = 'cancelled' WHERE state = 'queued' AND app = ?", (TRUE_APP,))
    without, with_quotas = latency_summary(plain), latency_summary(held)
    return [
        Result(
            "jobs: submit with project quotas",
            backend,
            {
                "p50_ms_without": without["p50_ms"],
                "p50_ms_with": with_quotas["p50_ms"],
                "added_p50_ms": round(with_quotas["p50_ms"] - without["p50_ms"], 3),
                "p99_ms_with": with_quotas["p99_ms"],
                "n_each": without["n"],
            },
            target=TARGETS["quota"],
            notes=f"{rounds} alternating rounds of {per_round} sequential submits per project, one server, "
            "capacity held (jobs stay queued, every quota holds each one)",
        )
    ]


MEASUREMENTS: dict[str, Callable[[str, bool], list[Result]]] = {
    "submit": measure_submit,
    "quota": measure_quota_cost,
    "dispatch": measure_dispatch,
    "end-to-end": measure_end_to_end,
    "list": measure_list,
}


def _list_queued(backend: str, quick: bool) -> list[Result]:
    from bench import bench_listing

    return bench_listing.measure_list_queued(backend, quick)


def _mixed(backend: str, quick: bool) -> list[Result]:
    from bench import bench_listing

    return bench_listing.measure_mixed(backend, quick)


def _replicas(backend: str, quick: bool) -> list[Result]:
    from bench import bench_listing

    return bench_listing.measure_mixed_replicas(backend, quick)


MEASUREMENTS |= {"list-queued": _list_queued, "mixed": _mixed, "replicas": _replicas}
TARGETS |= {
    "list-queued": "page of queued jobs <= the same page of ended jobs",
    "mixed": ">= 400 requests/s, listing p99 <= 100 ms, 0 errors",
    "replicas": "none of its own (the 400 requests/s of the mixed load)",
}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    """Every measurement, or those named in LABCLOUD_BENCH_JOBS (comma-separated, e.g. "submit,mixed")."""
    wanted = [w for w in os.environ.get("LABCLOUD_BENCH_JOBS", "").split(",") if w]
    unknown = sorted(set(wanted) - set(MEASUREMENTS))
    if unknown:
        raise SystemExit(f"LABCLOUD_BENCH_JOBS: no measurement {unknown}; there are {sorted(MEASUREMENTS)}")
    chosen = {name: MEASUREMENTS[name] for name in wanted} if wanted else MEASUREMENTS
    return run_all("jobs", chosen, TARGETS, backends, quick)


def run_quota(backends: list[str], quick: bool = False) -> list[Result]:
    """Only what project quotas add to a submit (``--only quota``)."""
    return run_all("jobs", {"quota": measure_quota_cost}, TARGETS, backends, quick)
