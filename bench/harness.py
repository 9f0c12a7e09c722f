"""What every benchmark needs: a real `labcloud serve` on SQLite or PostgreSQL, accounts, a timer."""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from testing.daemons import free_port

PG_SERVER = os.environ.get("LABCLOUD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-password"
# Opt-in: a folder where each server's stdout and stderr are kept (default: discarded).
SERVER_LOG_DIR = os.environ.get("LABCLOUD_BENCH_SERVER_LOGS", "")


@dataclass
class Server:
    backend: str
    url: str
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def admin_token(self) -> str:
        with self.client() as c:
            r = c.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            r.raise_for_status()
            login = r.json()["access_token"]
            r = c.post(
                "/api/v1/me/tokens",
                json={"name": f"bench-{secrets.token_hex(3)}", "scopes": ["read", "write", "admin"]},
                headers={"Authorization": f"Bearer {login}"},
            )
            r.raise_for_status()
            token: str = r.json()["token"]
            return token


@contextmanager
def database(backend: str) -> Iterator[str]:
    """An empty database URL for the backend ('' means SQLite in the data dir)."""
    if backend == "sqlite":
        yield ""
        return
    name = f"labcloud_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_server(backend: str, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-") as tmp, database(backend) as url:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}
        env |= {
            "LABCLOUD_HOME": str(home),
            "LABCLOUD_DATABASE_URL": url,
            "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN_EMAIL,
            "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "LABCLOUD_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        cli = [sys.executable, "-m", "labcloud.cli"]
        if url:
            subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        port = free_port()
        log: Any = subprocess.DEVNULL
        if SERVER_LOG_DIR:
            Path(SERVER_LOG_DIR).mkdir(parents=True, exist_ok=True)
            log = open(Path(SERVER_LOG_DIR) / f"serve-{backend}-{port}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        if SERVER_LOG_DIR:
            log.close()  # the child has its own copy
        server = Server(backend, f"http://127.0.0.1:{port}", env, home, proc)
        try:
            wait_ready(server.url, proc, f"labcloud serve did not start on {backend}")
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def wait_ready(url: str, proc: subprocess.Popen[bytes], failure: str, timeout_s: float = 60) -> None:
    """Until the server at ``url`` answers ``/readyz``; RuntimeError(``failure``) if its process ends first
    or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.1)


@dataclass
class Result:
    benchmark: str
    backend: str
    metrics: dict[str, float] = field(default_factory=dict)
    target: str = ""
    notes: str = ""


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def reachable(folder: Path) -> None:
    """A scratch folder the job user may pass through (runners started as root run jobs as that user when
    the sandbox is off, and refuse a job folder it could not reach)."""
    folder.chmod(0o711)


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": float(len(ms)),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


# ------------------------------------------------------------------------------------ machine noise


def cpu_seconds(extra: Callable[[], float] | None = None) -> tuple[float, float]:
    """(CPU time the whole machine has spent busy, CPU time of this process, its reaped descendants, and
    ``extra()``: live processes of the benchmark's own, e.g. a server's tree)."""
    t = psutil.cpu_times()
    busy = (
        t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
    )
    me = psutil.Process().cpu_times()
    ours = me.user + me.system + me.children_user + me.children_system
    return busy, ours + (extra() if extra is not None else 0.0)


def calibration_ms() -> float:
    """Best of three runs of a fixed pure-Python loop: how fast this (possibly shared) machine is now."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def with_machine(
    measure: Callable[[], list[Result]], extra: Callable[[], float] | None = None
) -> list[Result]:
    """``measure()``'s rows, each with how trustworthy the machine was while it ran: ``other_cpu_pct``,
    CPU used outside the benchmark's own processes (client, server, jobs), in % of one core (on
    PostgreSQL it includes the database server's own share); and ``cpu_calib_ms``, a fixed Python loop
    timed just before, which on a shared VM can vary by 2x with nothing visible running."""
    calib = round(calibration_ms())
    busy0, ours0 = cpu_seconds(extra)
    start = time.perf_counter()
    rows = measure()
    busy1, ours1 = cpu_seconds(extra)
    other = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (time.perf_counter() - start) * 100
    machine = {"other_cpu_pct": float(round(other)), "cpu_calib_ms": float(calib)}
    return [replace(r, metrics=r.metrics | machine) for r in rows]


def run_all(
    label: str,
    measurements: dict[str, Callable[[str, bool], list[Result]]],
    targets: dict[str, str],
    backends: list[str],
    quick: bool,
) -> list[Result]:
    """Every measurement on every backend, with the machine's noise; one that fails becomes a row saying
    why, and the rest still run."""
    results: list[Result] = []
    for backend in backends:
        for name, measure in measurements.items():
            results += with_machine(partial(_attempt, label, name, measure, targets, backend, quick))
    return results


def _attempt(
    label: str,
    name: str,
    measure: Callable[[str, bool], list[Result]],
    targets: dict[str, str],
    backend: str,
    quick: bool,
) -> list[Result]:
    try:
        return measure(backend, quick)
    except Exception as exc:
        note = f"FAILED: {exc.__class__.__name__}: {exc}"[:600]
        return [Result(f"{label}: {name}", backend, {}, target=targets.get(name, ""), notes=note)]
