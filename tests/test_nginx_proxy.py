"""The deployment kit's nginx site (deploy/nginx/labcloud.conf) in front of two ``labcloud serve`` replicas
on one database: Debian's nginx, started unprivileged by the test with TLS and HTTP/2, and real replicas
(SQLite in one shared home, or PostgreSQL with LABCLOUD_TEST_DB=postgresql).

What goes through it: a tus upload broken off mid-body and resumed (the body reaches the replica as it
comes), a ranged download, a live log followed line by line (not held back until the job ends), the
forwarded client address and scheme (believed from nginx, ignored from anyone else), and the leader
replica killed while requests go on succeeding. The tests of this module run in order on one set of
servers; the last one kills a replica.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import _empty_tables, backend, kill_processes_under
from jobs_helpers import TERMINAL, py, write_app
from labcloud.services import partial_files
from labcloud.settings import Settings
from live_server import Popen, eventually, server_env, start_server, stop_server
from testing.nginx import Nginx

ADMIN = ("proxy-admin@example.org", "proxy-admin-password")
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {"Content-Type": "application/offset+octet-stream"}
MAX_FAILURES = 3  # failed logins from one address before it is slowed down


@dataclass
class Stack:
    home: Path
    nginx: Nginx
    replicas: dict[str, Popen]  # url -> process
    token: str

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, local_address: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client of the proxy, connecting from ``local_address`` (any 127.x.y.z) when given."""
        transport = httpx.HTTPTransport(verify=self.nginx.ssl_context(), local_address=local_address)
        return httpx.Client(base_url=self.url, transport=transport, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="labcloud-proxied-"))
    write_app(
        home / "apps",
        "drip",
        py("""
        import time
        print("first", flush=True)
        time.sleep(6)
        print("second", flush=True)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    url = database_url if backend() == "postgresql" else None
    env = server_env(
        home,
        ADMIN,
        url,
        trusted_proxies='["127.0.0.1"]',  # nginx connects from there; a client from 127.0.0.2 is not it
        login_address_max_failures=str(MAX_FAILURES),
        leader_check_interval_s="0.5",
    )
    logs = home.parent / f"{home.name}-logs"
    logs.mkdir()
    replicas: dict[str, Popen] = {}
    nginx: Nginx | None = None
    try:
        for name in ("first", "second"):
            address, proc = start_server(env, logs / f"{name}.log")
            replicas[address] = proc
        nginx = Nginx(home.parent / f"{home.name}-nginx", [urlsplit(u).netloc for u in replicas]).__enter__()
        with httpx.Client(verify=nginx.ssl_context()) as http:
            r = http.post(f"{nginx.url}/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
            assert r.status_code == 200, r.text
        yield Stack(home, nginx, replicas, r.json()["access_token"])
    finally:
        if nginx is not None:
            nginx.stop()
            shutil.rmtree(nginx.folder, ignore_errors=True)
        for proc in replicas.values():
            if proc.poll() is None:
                stop_server(proc)
        kill_processes_under(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        _empty_tables(database_url)


def payload(size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += hashlib.sha256(len(out).to_bytes(8, "big")).digest()
    return bytes(out[:size])


def test_tls_http2_and_the_plain_port_redirects(stack: Stack) -> None:
    curl = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(stack.nginx.cert), "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", f"{stack.url}/healthz"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert curl.stdout == "2 200", curl.stderr
    r = httpx.get(f"{stack.nginx.http_url}/healthz", follow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"].startswith("https://")


def test_a_tus_upload_broken_off_through_the_proxy_resumes_and_downloads_by_range(stack: Stack) -> None:
    data = payload(6 * 2**20)
    with stack.client(headers={**stack.auth, **TUS}) as http:
        r = http.post(
            "/api/v1/uploads",
            headers={
                "Upload-Length": str(len(data)),
                "Upload-Metadata": "path cHJveGllZC5iaW4=",
            },  # proxied.bin
        )
        assert r.status_code == 201, r.text
        # The replica built the link from what nginx forwarded: the client's scheme, host and port.
        assert r.headers["Location"].startswith(f"{stack.url}/api/v1/uploads/"), r.headers["Location"]
        path = urlsplit(r.headers["Location"]).path
        part = partial_files.partial_path(Settings(home=stack.home), uuid.UUID(path.rsplit("/", 1)[1]))

        # A PATCH that sends 4 of its 6 MiB, then its client dies. The replica must see the bytes while
        # they come (nginx does not spool the body first): the partial file grows before the body ends.
        sent = 4 * 2**20
        raw = socket.create_connection(("127.0.0.1", stack.nginx.https_port))
        sock = stack.nginx.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
        try:
            head = (
                f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.nginx.https_port}\r\n"
                f"Authorization: {stack.auth['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(head.encode() + data[:sent])
            eventually(
                lambda: part.exists() and part.stat().st_size >= 2**20, 60, "the replica to write 1 MiB"
            )
        finally:
            sock.close()

        def offset() -> int:
            return int(http.head(path).headers["Upload-Offset"])  # from either replica

        eventually(offset, 60, "the broken PATCH to record its offset")
        done = offset()
        assert 0 < done <= sent
        r = http.patch(path, content=data[done:], headers={**CHUNK, "Upload-Offset": str(done)})
        assert r.status_code == 204, r.text
        assert r.headers["Labcloud-File-Sha256"] == hashlib.sha256(data).hexdigest()

        whole = http.get("/api/v1/files/proxied.bin")
        assert whole.status_code == 200 and whole.content == data
        ranged = http.get("/api/v1/files/proxied.bin", headers={"Range": "bytes=1000000-1999999"})
        assert ranged.status_code == 206, ranged.text
        assert ranged.headers["Content-Range"] == f"bytes 1000000-1999999/{len(data)}"
        assert ranged.content == data[1000000:2000000]


def test_a_live_log_comes_through_line_by_line(stack: Stack) -> None:
    """The job prints "first", waits 6 s and prints "second": "first" must arrive while the job still
    runs, not held back with the rest until the stream ends."""
    with stack.client(headers=stack.auth) as http:
        r = http.post("/api/v1/jobs", json={"app": "drip"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        data: list[str] = []
        with http.stream("GET", f"/api/v1/jobs/{job}/logs", params={"follow": "true"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                if "first" in data:
                    state = http.get(f"/api/v1/jobs/{job}").json()["state"]
                    assert state not in TERMINAL and "second" not in data, (state, data)
                    break
            else:
                raise AssertionError(f"the stream ended without 'first': {data}")
            rest = [line[5:].strip() for line in lines if line.startswith("data:")]
        assert "second" in rest, rest


def logins(http: httpx.Client, url: str, forged: bool) -> list[int]:
    """Five failed logins (each for another account), each claiming another client address when
    ``forged``; their statuses."""
    statuses = []
    for i in range(MAX_FAILURES + 2):
        headers = {"X-Forwarded-For": f"198.51.100.{i}"} if forged else {}
        form = {"username": f"nobody-{uuid.uuid4().hex[:8]}@example.org", "password": "wrong-password"}
        statuses.append(http.post(f"{url}/api/v1/auth/login", data=form, headers=headers).status_code)
    return statuses


def throttled(statuses: list[int]) -> bool:
    # The first delay (1 s) may be over by the next try on a busy machine; the next (2 s) is not.
    return statuses[:MAX_FAILURES] == [401] * MAX_FAILURES and 429 in statuses[MAX_FAILURES:]


def test_forwarded_headers_are_believed_from_the_proxy_only(stack: Stack) -> None:
    replica = next(iter(stack.replicas))
    create = {**stack.auth, **TUS, "Upload-Length": "1", "Upload-Metadata": "path Zm9yd2FyZGVk"}
    # Straight to a replica from 127.0.0.2, which is not the proxy: its X-Forwarded-* mean nothing.
    outsider = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60)
    with outsider:
        r = outsider.post(f"{replica}/api/v1/uploads", headers={**create, "X-Forwarded-Proto": "https"})
        assert r.status_code == 201 and r.headers["Location"].startswith(f"{replica}/"), r.headers
        assert throttled(logins(outsider, replica, forged=True))
    # Through nginx: what the client claims to forward is dropped, its real address is what counts...
    with stack.client() as http:
        assert throttled(logins(http, stack.url, forged=True))
    # ...so another client behind the same proxy is not slowed down by the first one's failures.
    with stack.client(local_address="127.0.0.3") as other:
        assert logins(other, stack.url, forged=False)[0] == 401


def test_a_replica_killed_behind_the_proxy(stack: Stack) -> None:
    """Both replicas answer through nginx; the one that dispatches is killed; requests (reads, an upload,
    a job) keep succeeding through nginx, and the other replica takes over dispatching."""
    with stack.client(headers=stack.auth) as http:
        seen = {http.get("/readyz").json()["dispatching"] for _ in range(6)}
        assert seen == {True, False}  # round robin: the leader and the follower both answered
        leader = next(u for u in stack.replicas if httpx.get(f"{u}/readyz").json()["dispatching"])
        victim = stack.replicas[leader]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)

        started = time.monotonic()
        for i in range(20):
            assert http.get("/api/v1/me").status_code == 200, i
            assert http.get("/readyz").status_code == 200, i
            r = http.put(f"/api/v1/files/after-kill-{i}.txt", content=f"file {i}\n".encode())
            assert r.status_code in (200, 201), r.text
            r = http.get(f"/api/v1/files/after-kill-{i}.txt", headers={"Range": "bytes=0-3"})
            assert r.status_code == 206 and r.content == b"file", i
        assert time.monotonic() - started < 60
        r = http.post("/api/v1/jobs", json={"app": "drip"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]

        def ended() -> dict[str, Any] | None:
            found: dict[str, Any] = http.get(f"/api/v1/jobs/{job}").json()
            return found if found["state"] in TERMINAL else None

        assert eventually(ended, 90, "the job to be run by the surviving replica")["state"] == "succeeded"
        assert http.get("/readyz").json()["dispatching"] is True
