"""Real labcloud processes for tests: ``labcloud serve`` on a free port, and waiting with a deadline.

Each process gets a clean environment (no ``LABCLOUD_*`` from the caller) plus what the test gives it.
Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from testing.daemons import clean_env, free_port

LABCLOUD = [sys.executable, "-m", "labcloud.cli"]
ADMIN_EMAIL = "admin@example.org"  # the first administrator of the ``server`` fixture's server
ADMIN_PASSWORD = "live-server-admin-password"
T = TypeVar("T")
Popen = subprocess.Popen[bytes]


def eventually(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def start_server(env: dict[str, str], log_path: Path, ready_timeout: float = 120) -> tuple[str, Popen]:
    """Start ``labcloud serve`` with ``env`` on a free port of 127.0.0.1, in a session of its own; its URL
    and process once ``/readyz`` answers 200 (a loaded machine starts it slowly)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*LABCLOUD, "serve", "--port", str(port)],
            env={**clean_env(), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # One client for all the polls: a new one (what httpx.get makes) loads the CA certificates each time,
    # some 20 ms of CPU taken from the server that is starting, 10 times a second.
    http = httpx.Client(timeout=2)

    def ready() -> bool:
        assert proc.poll() is None, "labcloud serve exited:\n" + log_path.read_text(errors="replace")
        try:
            return http.get(f"{url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, ready_timeout, "labcloud serve to be ready", interval=0.1)
    except BaseException:
        stop_server(proc)
        raise
    finally:
        http.close()
    return url, proc


def stop_server(proc: Popen) -> None:
    """SIGTERM, then SIGKILL if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def login_headers(url: str, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> dict[str, str]:
    """Log in to a live server with a password; the ``Authorization`` header of the token it gives."""
    r = httpx.post(f"{url}/api/v1/auth/login", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@contextlib.contextmanager
def serve(env: dict[str, str], log_path: Path, ready_timeout: float = 120) -> Iterator[str]:
    """``labcloud serve`` (see :func:`start_server`) for the duration of a ``with``; stopped after."""
    url, proc = start_server(env, log_path, ready_timeout)
    try:
        yield url
    finally:
        stop_server(proc)


@dataclass
class Server:
    url: str
    config: Path  # the client config file the commands use (LABCLOUD_CLIENT_CONFIG)

    def env(self, **extra: str) -> dict[str, str]:
        return {**clean_env(), "LABCLOUD_CLIENT_CONFIG": str(self.config), "COLUMNS": "200", **extra}

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LABCLOUD, *args],
            env=env or self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, f"labcloud {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def login(self) -> None:
        """Log in as the administrator, the password on standard input."""
        self.ok(
            "login", "--server", self.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=ADMIN_PASSWORD
        )


def server_env(
    home: Path, admin: tuple[str, str], database_url: str | None, **settings: str
) -> dict[str, str]:
    """The environment of a test's ``labcloud serve``: its data dir, first admin, quiet logs and quick
    kills; ``database_url`` (PostgreSQL) or None (SQLite in the data dir); more LABCLOUD_<NAME> values."""
    env = {
        "LABCLOUD_HOME": str(home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": admin[0],
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": admin[1],
        "LABCLOUD_LOG_LEVEL": "warning",
        "LABCLOUD_KILL_GRACE_S": "1",
        **{f"LABCLOUD_{name.upper()}": value for name, value in settings.items()},
    }
    if database_url:
        env["LABCLOUD_DATABASE_URL"] = database_url
    return env
