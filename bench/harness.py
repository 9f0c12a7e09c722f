"""What every benchmark needs: a real `labcloud serve` on SQLite or PostgreSQL, accounts, a timer."""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

PG_SERVER = os.environ.get("LABCLOUD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-password"
# Opt-in: a folder where each server's stdout and stderr are kept (default: discarded).
SERVER_LOG_DIR = os.environ.get("LABCLOUD_BENCH_SERVER_LOGS", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"labcloud serve did not start on {backend}")
                time.sleep(0.1)
            yield server
        finally:
            proc.terminate()
            proc.wait(timeout=30)


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


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": float(len(ms)),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }
