"""A real ``labcloud serve`` with the pull executor and real ``labcloud worker`` processes, for tests.

Everything is a separate process on 127.0.0.1; waiting is polling the API (or a worker's log) with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import _empty_tables, backend, kill_processes_under
from live_server import LABCLOUD, eventually, serve
from testing.daemons import clean_env

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "worker-test-password"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 whose link can be cut (open connections reset, new ones closed at once)
    and restored: the network between a worker and the server failing, for real."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open -= {source, sink}

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@dataclass
class WorkerProc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    work_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 30) -> str:
        def found() -> str | None:
            log = self.log()
            if text in log:
                return log
            assert self.process.poll() is None or text in self.log(), (
                f"worker {self.name} exited ({self.process.returncode}) before logging {text!r}:\n{log}"
            )
            return None

        return eventually(found, timeout, f"worker {self.name} to log {text!r}")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} did not exit within {timeout:g} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class Cluster:
    """The server, an admin API token, the apps dir, and the workers started so far."""

    url: str
    home: Path
    apps_dir: Path
    admin_token: str
    http: httpx.Client
    workers: list[WorkerProc] = field(default_factory=list)

    # ------------------------------------------------------------------------------ the API

    def api(self, method: str, path: str, expect: int | tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        r = self.http.request(method, "/api/v1" + path, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in wanted, f"{method} {path} → {r.status_code} {r.text}"
        return r.json() if r.content else None

    def submit(self, app: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        job: dict[str, Any] = self.api("POST", "/jobs", json={"app": app, "params": params or {}, **extra})
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.api("GET", f"/jobs/{job_id}")
        return job

    def events(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api("GET", f"/jobs/{job_id}/events")
        return events

    def log(self, job_id: str) -> str:
        return self.http.get(f"/api/v1/jobs/{job_id}/logs", headers={"Accept": "text/plain"}).text

    def wait_job(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60, what: str = ""
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if done(job) else None

        return eventually(check, timeout, what or f"job {job_id}", interval=0.05)

    def wait_end(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_job(job_id, lambda j: j["state"] in TERMINAL, timeout, f"job {job_id} to end")

    def ran_on(self, job_id: str) -> list[str]:
        """The workers each attempt was given to, from the job's history ("on worker NAME")."""
        return [
            e["message"].removeprefix("on worker ")
            for e in self.events(job_id)
            if e["to_state"] == "staging" and e["message"].startswith("on worker ")
        ]

    def worker_info(self, name: str) -> dict[str, Any]:
        items = self.api("GET", "/workers", params={"limit": 200})["items"]
        found: list[dict[str, Any]] = [w for w in items if w["name"] == name]
        assert found, f"no worker {name} in {[w['name'] for w in items]}"
        return found[0]

    def cancel_everything(self) -> None:
        """Leave no job another test's workers could pick up."""
        active = ["queued", "staging", "running", "finishing"]
        while True:
            page = self.api("GET", "/jobs", params={"state": active, "limit": 200})
            if not page["items"]:
                return
            for job in page["items"]:
                self.http.post(f"/api/v1/jobs/{job['id']}/cancel")
            if all(j["state"] != "queued" for j in page["items"]):
                return

    # ------------------------------------------------------------------------------ the CLI

    def cli_env(self, **extra: str) -> dict[str, str]:
        return {
            **clean_env(),
            "LABCLOUD_CLIENT_CONFIG": str(self.home / "no-client.json"),
            "LABCLOUD_SERVER": self.url,
            "LABCLOUD_TOKEN": self.admin_token,
            "COLUMNS": "200",
            **extra,
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*LABCLOUD, *args], env=self.cli_env(), capture_output=True, text=True, timeout=60, check=False
        )
        if check:
            assert r.returncode == 0, f"labcloud {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def add_worker(self, name: str, *labels: str) -> str:
        """Register through ``labcloud workers add``; the token it prints."""
        args = ["workers", "add", name]
        for label in labels:
            args += ["--label", label]
        token = self.cli(*args).stdout.strip()
        assert token.startswith("lcw_"), token
        return token

    def start_worker(
        self,
        name: str,
        *args: str,
        token: str | None = None,
        labels: tuple[str, ...] = (),
        cpus: float = 1,
        memory_mb: int = 1024,
        wait: bool = True,
        server: str | None = None,
        work_dir: Path | None = None,
    ) -> WorkerProc:
        """Register (unless ``token`` is given; "" passes none, for ``--token-file``) and start
        ``labcloud worker``; wait for its first heartbeat. ``work_dir``: its folder (else one in the home)."""
        if token is None:
            token = self.add_worker(name, *labels)
        work_dir = work_dir or self.home / "workers" / name
        log_path = self.home / "workers" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**clean_env(), **({"LABCLOUD_WORKER_TOKEN": token} if token else {})}
        command = [
            *LABCLOUD,
            "worker",
            "--server",
            server or self.url,
            "--work-dir",
            str(work_dir),
            "--cpus",
            str(cpus),
            "--memory-mb",
            str(memory_mb),
            "--kill-grace",
            "1",
            *args,
        ]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProc(name, process, log_path, work_dir)
        self.workers.append(worker)
        if wait:
            worker.wait_log("connected to", timeout=60)
        return worker

    def reset(self) -> None:
        """After a test: its workers stopped, with what they ran, and no job left for the next test's."""
        self.stop_workers()
        kill_processes_under(self.home / "workers")
        self.cancel_everything()

    def stop_workers(self) -> None:
        """Kill the workers and revoke every worker token: a killed worker's long-polling claim may still
        be waiting on the server, and must not take the next test's jobs."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGCONT)
            worker.kill()
        self.workers.clear()
        for info in self.api("GET", "/workers", params={"limit": 200})["items"]:
            if info["state"] != "revoked":
                self.api("POST", f"/workers/{info['id']}/revoke")


@contextlib.contextmanager
def pull_server(
    home: Path,
    database_url: str | None,
    apps: Callable[[Path], None],
    lease_seconds: int = 3,
    process_env: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[Cluster]:
    """``labcloud serve`` with ``LABCLOUD_EXECUTOR=pull`` on a free port; ``apps`` writes the app files
    first. ``database_url`` None: SQLite in ``home``. ``settings``: more LABCLOUD_<NAME> values (executor
    included)."""
    apps_dir = home / "apps"
    apps_dir.mkdir(parents=True, exist_ok=True)
    apps(apps_dir)
    env = {
        "LABCLOUD_HOME": str(home),
        "LABCLOUD_EXECUTOR": "pull",
        "LABCLOUD_LEASE_SECONDS": str(lease_seconds),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN_EMAIL,
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LABCLOUD_LOG_LEVEL": "warning",
        **{f"LABCLOUD_{name.upper()}": value for name, value in settings.items()},
        **(process_env or {}),
    }
    if database_url:
        env["LABCLOUD_DATABASE_URL"] = database_url
    with (
        serve(env, home / "server.log", ready_timeout=90) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        r = http.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        login = r.json()["access_token"]
        r = http.post(
            "/api/v1/me/tokens",
            json={"name": "worker-tests", "scopes": ["read", "write", "admin"]},
            headers={"Authorization": f"Bearer {login}"},
        )
        assert r.status_code == 201, r.text
        http.headers["Authorization"] = f"Bearer {r.json()['token']}"
        cluster = Cluster(url, home, apps_dir, r.json()["token"], http)
        try:
            yield cluster
        finally:
            cluster.stop_workers()


@contextlib.contextmanager
def suite_pull_server(
    home: Path, database_url: str, apps: Callable[[Path], None], lease_seconds: int = 3
) -> Iterator[Cluster]:
    """:func:`pull_server` on the database of this pass of the suite (SQLite in ``home``, or the
    suite's PostgreSQL, emptied afterwards); no process started under ``home`` outlives it."""
    url = database_url if backend() == "postgresql" else None
    try:
        with pull_server(home, url, apps, lease_seconds=lease_seconds) as cluster:
            yield cluster
    finally:
        kill_processes_under(home)
        if url:
            _empty_tables(url)
