"""Hostile requests: nothing is read before the caller is known, everything is bounded, and what a
caller sends is never trusted beyond what it was given."""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL as ADMIN_EMAIL_IN_PROCESS
from conftest import ADMIN_PASSWORD as ADMIN_PASSWORD_IN_PROCESS
from conftest import Account, bearer
from jobs_helpers import write_app
from labcloud.settings import Settings
from live_server import ADMIN_EMAIL, ADMIN_PASSWORD, start_server, stop_server

FREE = {"cpus": 4, "memory_mb": 8192, "gpus": 0}


def register_worker(client: TestClient, admin: Account, name: str, **labels: str) -> str:
    r = client.post("/api/v1/workers", json={"name": name, "labels": labels}, headers=admin.headers)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def claim(client: TestClient, token: str, **extra: Any) -> dict[str, Any] | None:
    r = client.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": 0, **extra}, headers=bearer(token))
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()["job"]
    return job


# ---------------------------------------------------------------------------------------- worker labels


def test_a_worker_claims_only_with_the_labels_it_was_registered_with(
    settings: Settings, client: TestClient, admin: Account, user: Account
) -> None:
    write_app(settings.effective_apps_dir, "board", ["true"], labels={"platform": "spinnaker"})
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    impostor = register_worker(client, admin, "impostor")
    r = client.post("/api/v1/jobs", json={"app": "board", "params": {}}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert claim(client, impostor, labels={"platform": "spinnaker"}) is None
    assert client.get(f"/api/v1/jobs/{r.json()['id']}", headers=user.headers).json()["state"] == "queued"
    board = register_worker(client, admin, "board", platform="spinnaker")
    got = claim(client, board)
    assert got is not None and got["id"] == r.json()["id"]


# ------------------------------------------------------------------------------ memory before authentication


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``labcloud serve`` on a database of its own (SQLite: what is measured is memory, whichever the
    database), and its process id."""
    home = tmp_path_factory.mktemp("hostile-home")
    env = {
        "LABCLOUD_HOME": str(home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN_EMAIL,
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LABCLOUD_LOG_LEVEL": "warning",
    }
    url, proc = start_server(env, home / "server.log")
    try:
        yield url, proc.pid
    finally:
        stop_server(proc)


def peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS


def send_big_body(url: str, method: str, path: str, headers: dict[str, str], size: int) -> tuple[int, int]:
    """Declare ``size`` bytes and keep sending them until the server answers; (status, bytes sent)."""
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port))
    head = f"{method} {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Length: {size}\r\n"
    sock.sendall((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    sock.setblocking(False)
    block, sent, answer, sending = b" " * (1 << 20), 0, b"", True
    deadline = time.monotonic() + 60
    try:
        while b"\r\n" not in answer:
            assert time.monotonic() < deadline, f"no answer after sending {sent} bytes"
            readable, writable, _ = select.select([sock], [sock] if sending and sent < size else [], [], 1)
            if readable:
                data = sock.recv(65536)
                assert data, f"closed without an answer after {sent} bytes"
                answer += data
            elif writable:
                try:
                    sent += sock.send(block[: size - sent])
                except (BrokenPipeError, ConnectionResetError):
                    sending = False  # the server stopped reading: its answer is on its way
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1]), sent


BIG = 256 << 20
SOME_JOB = "01900000-0000-7000-8000-000000000000"
BOGUS_JOB_TOKEN = {"Authorization": "Bearer lcj_bogus.token.here"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", f"/api/v1/worker/jobs/{SOME_JOB}/log", {**BOGUS_JOB_TOKEN, "Log-Offset": "0"}, 401),
        ("PUT", f"/api/v1/worker/jobs/{SOME_JOB}/outputs/out.bin", BOGUS_JOB_TOKEN, 401),
        ("POST", "/api/v1/worker/heartbeat", {"Authorization": "Bearer lcw_bogus"}, 401),
        ("POST", "/api/v1/jobs", {"Content-Type": "application/json"}, 401),
        (
            "POST",
            "/api/v1/me/tokens",
            {"Authorization": "Bearer lc_bogus", "Content-Type": "application/json"},
            401,
        ),
        ("PUT", "/api/v1/files/big.bin", {"Authorization": "Bearer not-a-token"}, 401),
        (
            "PATCH",
            f"/api/v1/uploads/{SOME_JOB}",
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            401,
        ),
        (
            "POST",
            "/api/v1/uploads",
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(BIG),
                "Content-Type": "application/offset+octet-stream",
            },
            401,
        ),
        ("POST", "/api/v1/auth/login", {"Content-Type": "application/x-www-form-urlencoded"}, 413),
        ("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, 413),
        ("POST", "/account/tokens", {"Content-Type": "application/x-www-form-urlencoded"}, 303),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else None,
)
def test_a_big_body_from_an_unknown_caller_is_refused_unread(
    live: tuple[str, int], method: str, path: str, headers: dict[str, str], status: int
) -> None:
    url, pid = live
    send_big_body(url, method, path, headers, 1 << 20)  # warm up: first-call imports and caches
    reset_peak_rss(pid)
    before = peak_rss_mb(pid)
    started = time.monotonic()
    got, sent = send_big_body(url, method, path, headers, BIG)
    assert got == status
    assert sent < BIG // 4, f"the server read {sent >> 20} MB before refusing"
    assert time.monotonic() - started < 10
    assert peak_rss_mb(pid) - before < 16, "the server's memory grew with a body it should not have read"


def _routes_with_parsed_bodies() -> Iterator[Any]:
    import importlib
    import pkgutil

    from fastapi.routing import APIRoute

    import labcloud.api.routers
    import labcloud.web.routes

    for package in (labcloud.api.routers, labcloud.web.routes):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for route in module.router.routes:
                if isinstance(route, APIRoute) and route.body_field is not None:
                    yield route


def test_every_route_with_a_parsed_body_authenticates_before_reading_it() -> None:
    from labcloud.http.guard import GuardedRoute, find_gate

    public = {  # (anonymous by nature; their bodies are still bounded and checked)
        "/api/v1/auth/login",
        "/api/v1/auth/register",
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset/confirm",
        "/api/v1/auth/sso/device/token",  # (throttled per address, like the password login)
        "/api/v1/auth/sso/cli-token",
        "/login",
        "/login/forgot",
        "/login/set-password",
    }
    routes = list(_routes_with_parsed_bodies())
    assert len(routes) > 10
    for route in routes:
        assert isinstance(route, GuardedRoute), f"{route.path} reads its body unguarded"
        if route.path not in public:
            assert find_gate(route.dependant) is not None, (
                f"{route.path} reads its body before authenticating"
            )


def test_a_json_body_over_the_limit_is_413_even_from_a_known_caller(
    settings: Settings, client: TestClient, user: Account
) -> None:
    settings.max_json_body_bytes = 64 * 1024
    body = {"app": "hello", "params": {"name": "x" * 100_000}}
    r = client.post("/api/v1/jobs", json=body, headers=user.headers)
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert str(64 * 1024) in r.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"app": "hello", "params": {"name": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}}'

    r = client.post(
        "/api/v1/jobs", content=chunked(), headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"name": "Ada"}}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert client.get("/api/v1/jobs", headers=user.headers).json()["items"][0]["params"]["name"] == "Ada"


def test_no_page_takes_a_body_over_the_limit(settings: Settings, client: TestClient, app: Any) -> None:
    settings.max_json_body_bytes = 64 * 1024
    browser = TestClient(app, base_url="http://testserver")
    page = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    login = {
        "email": ADMIN_EMAIL_IN_PROCESS,
        "password": ADMIN_PASSWORD_IN_PROCESS,
        "csrf_token": csrf.group(1),
    }
    assert browser.post("/login", data=login, follow_redirects=False).status_code == 303
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/account").text)
    assert csrf is not None
    # /logout reads its form itself (for the CSRF token), after the session is checked: bounded too
    r = browser.post(
        "/logout", data={"csrf_token": csrf.group(1), "padding": "x" * 100_000}, follow_redirects=False
    )
    assert r.status_code == 413 and "text/html" in r.headers["content-type"]
    assert browser.get("/account", follow_redirects=False).status_code == 200  # still logged in


def test_a_log_chunk_over_the_limit_is_413(
    settings: Settings, client: TestClient, admin: Account, user: Account
) -> None:
    settings.executor = "pull"
    settings.max_log_chunk_bytes = 64 * 1024
    token = register_worker(client, admin, "rig")
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers)
    assert r.status_code == 201, r.text
    got = claim(client, token)
    assert got is not None
    log = f"/api/v1/worker/jobs/{got['id']}/log"
    job_token = bearer(got["token"])
    r = client.post(log, content=b"x" * (64 * 1024 + 1), headers={**job_token, "Log-Offset": "0"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    for offset in ("-1", str(2**63)):
        r = client.post(log, content=b"x", headers={**job_token, "Log-Offset": offset})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["header", "log-offset"]
    r = client.post(log, content=b"x" * (64 * 1024), headers={**job_token, "Log-Offset": "0"})
    assert r.status_code == 200 and r.json() == {"size": 64 * 1024}
    # another job's id with this job's token: refused before the body is read
    r = client.post(
        f"/api/v1/worker/jobs/{uuid.uuid4()}/log", content=b"x", headers={**job_token, "Log-Offset": "0"}
    )
    assert r.status_code == 404


# ------------------------------------------------------------------------------------------ bad strings


def test_strings_that_are_not_text_are_refused_naming_every_field(client: TestClient, user: Account) -> None:
    body = b"""{"app": "hello", "params": {"name": "a\\ud800b"}, "name": "\\udfff",
                "tags": {"run": "\\ud83d", "\\udc00": "x", "fine": "\\ud83d\\ude00"}}"""
    r = client.post(
        "/api/v1/jobs", content=body, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    locs = [e["loc"] for e in r.json()["errors"]]
    assert ["body", "params", "name"] in locs
    assert ["body", "name"] in locs
    assert ["body", "tags", "run"] in locs
    assert ["body", "tags", "\\udc00"] in locs
    assert len(locs) == 4  # the surrogate pair in "fine" is a real character
    # nothing was stored, and the listing answers
    r = client.get("/api/v1/jobs", headers=user.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    r = client.patch(
        "/api/v1/me",
        content=b'{"name": "\\ud800"}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "name"]
    # a real emoji is text
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"name": "Ada 😀"}}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert client.get("/api/v1/jobs", headers=user.headers).json()["items"][0]["params"]["name"] == "Ada 😀"


def test_json_nested_too_deeply_is_refused(client: TestClient, user: Account) -> None:
    deep = b'{"app": "hello", "params": {"name": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    r = client.post(
        "/api/v1/jobs", content=deep, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"] == "application/problem+json"
    deep = b'{"app": "hello", "params": {"name": "x", "n": ' + b"[" * 100 + b"]" * 100 + b"}}"
    r = client.post(
        "/api/v1/jobs", content=deep, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert "nested" in r.json()["errors"][0]["msg"]
    assert client.get("/api/v1/jobs", headers=user.headers).status_code == 200


def test_file_paths_that_are_not_utf8_are_refused_not_replaced(client: TestClient, user: Account) -> None:
    for raw in ("a%FF.txt", "a%FE.txt", "dir%C3/b.txt", "%ED%A0%80.txt"):  # the last: an encoded surrogate
        r = client.put(f"/api/v1/files/{raw}", content=b"data", headers=user.headers)
        assert r.status_code == 400, (raw, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["loc"] == ["path"]
    assert client.get("/api/v1/files", headers=user.headers).json()["items"] == []
    r = client.get("/api/v1/files?prefix=%FF", headers=user.headers)
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["query"]
    # real UTF-8 names still work, and stay distinct
    for name in ("caf%C3%A9.txt", "cafe%CC%81x.txt"):
        assert client.put(f"/api/v1/files/{name}", content=b"x", headers=user.headers).status_code == 201
    names = sorted(i["path"] for i in client.get("/api/v1/files", headers=user.headers).json()["items"])
    assert names == ["café.txt", "café" + "x.txt"]


def test_job_list_filters_and_log_offsets_are_bounded(client: TestClient, user: Account) -> None:
    r = client.get("/api/v1/jobs", params={"tag": [f"k{i}=v" for i in range(1000)]}, headers=user.headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["query", "tag"] and "at most" in r.json()["errors"][0]["msg"]
    r = client.get("/api/v1/jobs", params={"tag": ["k" * 65 + "=v", "novalue"]}, headers=user.headers)
    assert r.status_code == 422 and [e["loc"] for e in r.json()["errors"]] == [
        ["query", "tag", 0],
        ["query", "tag", 1],
    ]
    r = client.get("/api/v1/jobs", params={"state": ["queued"] * 1000, "tag": ["a=b"]}, headers=user.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    job = client.post(
        "/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers
    ).json()
    for offset in (2**63, 2**64):
        r = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"offset": offset}, headers=user.headers)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == ["query", "offset"]
    r = client.get(f"/api/v1/jobs/{job['id']}/logs", params={"offset": 2**40}, headers=user.headers)
    assert r.status_code == 200 and r.text == ""


# ------------------------------------------------------------------------------------------------ /docs


def test_docs_load_nothing_from_elsewhere_and_carry_a_strict_csp(client: TestClient) -> None:
    for path in ("/docs", "/docs/oauth2-redirect"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = {part.split()[0]: part.split()[1:] for part in r.headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert "<script>" not in r.text and "style=" not in r.text  # nothing inline
        assert "//" not in r.text, "the page names another origin"
        for ref in re.findall(r'(?:src|href)="([^"]+)"', r.text):
            assert ref.startswith("/"), ref
            got = client.get(ref)
            assert got.status_code == 200, ref
            assert "//" not in ref
    assert 'data-openapi-url="/api/v1/openapi.json"' in client.get("/docs").text
