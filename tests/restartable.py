"""A ``labcloud serve`` that tests kill with SIGKILL and start again on the same data dir and port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx

from conftest import backend
from labcloud.settings import Settings
from live_server import LABCLOUD
from testing.daemons import clean_env, free_port


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*LABCLOUD, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, "labcloud serve exited"
            time.sleep(0.05)
        raise AssertionError("labcloud serve did not become ready")

    def kill(self) -> None:
        """kill -9 of the server and its process group (job supervisors live in sessions of their own)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def killable_server(
    settings: Settings, database_url: str, admin: tuple[str, str], **extra: str
) -> Iterator[Server]:
    """Not started yet: the test starts (and kills) it. Its data dir is ``settings.home``, so the
    ``settings`` fixture kills leftover job processes and empties the database afterwards."""
    env = clean_env() | {
        "LABCLOUD_HOME": str(settings.home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": admin[0],
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": admin[1],
        "LABCLOUD_LOG_LEVEL": "warning",
        "LABCLOUD_KILL_GRACE_S": "1",
        **{f"LABCLOUD_{k.upper()}": v for k, v in extra.items()},
    }
    if backend() == "postgresql":
        env["LABCLOUD_DATABASE_URL"] = database_url
    srv = Server(env)
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
