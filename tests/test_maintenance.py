"""Maintenance mode: new work is refused with 503, Retry-After and the message; what runs continues; the
dispatcher and remote workers start nothing; every replica follows; the CLI and the admin page switch it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, backend
from jobs_helpers import py, write_app
from labcloud.settings import Settings
from live_server import LABCLOUD, eventually, login_headers, serve, server_env
from test_web import browser_login, csrf_of
from test_worker_api import claim, register
from testing.daemons import clean_env

MESSAGE = "Upgrading the database; back at 14:00 UTC"


def _on(client: TestClient, admin: Account, **body: Any) -> dict[str, Any]:
    r = client.put("/api/v1/admin/maintenance", json={"enabled": True, **body}, headers=admin.headers)
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()
    return state


def _off(client: TestClient, admin: Account) -> None:
    r = client.put("/api/v1/admin/maintenance", json={"enabled": False}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text


def _refused(r: httpx.Response, retry_after: int = 120, message: str = MESSAGE) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == str(retry_after)
    assert r.json()["detail"] == message


def _tus_create(client: TestClient, user: Account, path: str) -> httpx.Response:
    meta = "path " + base64.b64encode(path.encode()).decode()
    headers = {**user.headers, "Tus-Resumable": "1.0.0", "Upload-Length": "5", "Upload-Metadata": meta}
    return client.post("/api/v1/uploads", headers=headers)


def _login(client: TestClient, email: str, password: str) -> httpx.Response:
    return client.post("/api/v1/auth/login", data={"username": email, "password": password})


def test_new_work_is_refused_and_the_rest_continues(
    client: TestClient, admin: Account, user: Account
) -> None:
    assert client.put("/api/v1/files/kept.txt", content=b"kept", headers=user.headers).status_code == 201
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers)
    assert r.status_code == 201, r.text
    earlier = r.json()["id"]

    begun = _tus_create(client, user, "begun.txt")  # an upload begun before: it may finish
    assert begun.status_code == 201, begun.text
    state = _on(client, admin, message=MESSAGE, retry_after_s=120)
    assert state["enabled"] is True and state["message"] == MESSAGE and state["retry_after_s"] == 120
    assert state["changed_by"] == admin.email
    got = client.get("/api/v1/admin/maintenance", headers=admin.headers).json()
    assert got["enabled"] is True and got["message"] == MESSAGE

    # new submits of every kind and new uploads: 503, Retry-After, the message
    _refused(client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers))
    _refused(client.post(f"/api/v1/jobs/{earlier}/rerun", json={}, headers=user.headers))
    _refused(client.post("/api/v1/sessions", json={"app": "hello", "devices": []}, headers=user.headers))
    task = {"executors": [{"image": "busybox", "command": ["true"]}]}
    _refused(client.post("/ga4gh/tes/v1/tasks", json=task, headers=user.headers))
    _refused(client.put("/api/v1/files/new.txt", content=b"new", headers=user.headers))
    _refused(_tus_create(client, user, "resumable.txt"))
    listed = {f["path"] for f in client.get("/api/v1/files", headers=user.headers).json()["items"]}
    assert "kept.txt" in listed and not listed & {"new.txt", "resumable.txt", "begun.txt"}

    # what is not new continues: downloads, listings, a job's page, deleting, logins
    assert client.get("/api/v1/files/kept.txt", headers=user.headers).content == b"kept"
    assert client.get("/api/v1/jobs", headers=user.headers).status_code == 200
    assert client.get(f"/api/v1/jobs/{earlier}", headers=user.headers).status_code == 200
    assert _login(client, user.email, user.password).status_code == 200
    tus = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    r = client.patch(begun.headers["location"], content=b"bytes", headers={**user.headers, **tus})
    assert r.status_code == 204, r.text
    assert client.get("/api/v1/files/begun.txt", headers=user.headers).content == b"bytes"

    # the pages show the banner, the login page too
    page = client.get("/login")
    assert page.status_code == 200 and MESSAGE in page.text and "maintenance-banner" in page.text

    _off(client, admin)
    assert client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers).status_code == 201
    assert client.put("/api/v1/files/new.txt", content=b"new", headers=user.headers).status_code == 201
    assert _tus_create(client, user, "resumable.txt").status_code == 201
    assert "maintenance-banner" not in client.get("/login").text


def test_message_and_retry_after_are_kept_and_defaulted(
    client: TestClient, admin: Account, user: Account
) -> None:
    state = _on(client, admin)  # nothing given: a general message, 300 s
    assert state["retry_after_s"] == 300 and "maintenance" in state["message"]
    _refused(client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers), 300, state["message"])
    _off(client, admin)
    _on(client, admin, message=MESSAGE, retry_after_s=60)
    _off(client, admin)
    again = _on(client, admin)  # kept from the last time
    assert again["message"] == MESSAGE and again["retry_after_s"] == 60


def test_only_admins_switch_it_and_bad_input_is_named_at_once(
    client: TestClient, admin: Account, user: Account
) -> None:
    assert client.get("/api/v1/admin/maintenance", headers=user.headers).status_code == 403
    r = client.put("/api/v1/admin/maintenance", json={"enabled": True}, headers=user.headers)
    assert r.status_code == 403
    assert client.get("/api/v1/admin/maintenance").status_code == 401
    r = client.put(
        "/api/v1/admin/maintenance",
        json={"enabled": True, "message": "line\nbreak\x1b[31m", "retry_after_s": 0},
        headers=admin.headers,
    )
    assert r.status_code == 422, r.text
    assert {tuple(e["loc"]) for e in r.json()["errors"]} == {("body", "message"), ("body", "retry_after_s")}
    r = client.put(
        "/api/v1/admin/maintenance", json={"enabled": True, "message": "x" * 501}, headers=admin.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "message"]
    r = client.put("/api/v1/admin/maintenance", json={"enabled": "maybe", "extra": 1}, headers=admin.headers)
    assert r.status_code == 422
    assert client.get("/api/v1/admin/maintenance", headers=admin.headers).json()["enabled"] is False


def test_workers_drain_and_take_up_again(pclient: TestClient, admin: Account, user: Account) -> None:
    token = register(pclient, admin, "rig-1")
    r = pclient.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers)
    assert r.status_code == 201
    _on(pclient, admin, message=MESSAGE)
    assert claim(pclient, token) is None  # queued, yet handed to nobody
    assert pclient.get(f"/api/v1/jobs/{r.json()['id']}", headers=user.headers).json()["state"] == "queued"
    _off(pclient, admin)
    got = claim(pclient, token)
    assert got is not None and got["id"] == r.json()["id"]


def test_the_dispatcher_starts_nothing_while_running_jobs_continue(
    client: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    """A job that fills the machine runs on through maintenance; one queued behind it is not started
    when room frees, until maintenance is off."""
    ctx: Any = client.app.state.ctx  # type: ignore[attr-defined]
    write_app(
        settings.effective_apps_dir,
        "hog",
        py("import time\nprint('started', flush=True)\ntime.sleep(120)"),
        resources={"cpus": 2, "memory_mb": 256, "timeout_s": 300},
    )
    hog = client.post("/api/v1/jobs", json={"app": "hog"}, headers=user.headers).json()["id"]
    eventually(
        lambda: client.get(f"/api/v1/jobs/{hog}", headers=user.headers).json()["state"] == "running",
        60,
        "the hog to run",
    )
    queued = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers)
    waiting = queued.json()["id"]
    _on(client, admin, message=MESSAGE)
    assert client.get(f"/api/v1/jobs/{hog}", headers=user.headers).json()["state"] == "running"
    assert client.post(f"/api/v1/jobs/{hog}/cancel", headers=user.headers).status_code == 200  # (not new)
    eventually(
        lambda: client.get(f"/api/v1/jobs/{hog}", headers=user.headers).json()["state"] == "cancelled",
        60,
        "the hog to be cancelled",
    )
    (scheduler,) = [s for s in ctx.schedulers if s.executor.name == "local"]
    assert scheduler.dispatch() == 0  # room enough now, and nothing starts
    assert client.get(f"/api/v1/jobs/{waiting}", headers=user.headers).json()["state"] == "queued"
    _off(client, admin)
    eventually(
        lambda: client.get(f"/api/v1/jobs/{waiting}", headers=user.headers).json()["state"] == "succeeded",
        60,
        "the queued job to run after maintenance",
    )


def test_the_admin_page_switches_it(client: TestClient, app: Any, admin: Account, user: Account) -> None:
    browser = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    page = browser.get("/admin/maintenance")
    assert page.status_code == 200 and "Maintenance is <strong>off</strong>" in page.text
    csrf = csrf_of(page.text)
    bad = browser.post(
        "/admin/maintenance",
        data={"csrf_token": csrf, "action": "on", "retry_after_s": "soon", "message": "a\tb"},
    )
    assert bad.status_code == 422 and "a whole number of seconds" in bad.text and "printable" in bad.text
    done = browser.post(
        "/admin/maintenance",
        data={"csrf_token": csrf, "action": "on", "message": MESSAGE, "retry_after_s": "90"},
        follow_redirects=True,
    )
    assert done.status_code == 200 and "Maintenance is <strong>on</strong>" in done.text
    assert MESSAGE in done.text
    _refused(client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers), 90)
    form = browser.post("/apps/hello/run", data={"csrf_token": csrf, "params.name": "x", "params.times": "1"})
    assert form.status_code == 503 and form.headers["retry-after"] == "90" and MESSAGE in form.text
    assert client.get("/api/v1/jobs", headers=admin.headers).json()["items"] == []
    mine = browser_login(app, user.email, user.password)  # not an admin: neither the page nor the switch
    assert mine.get("/admin/maintenance").status_code == 403
    csrf_mine = csrf_of(mine.get("/account").text)
    assert mine.post("/admin/maintenance", data={"csrf_token": csrf_mine, "action": "off"}).status_code == 403
    _refused(client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers), 90)
    browser.post("/admin/maintenance", data={"csrf_token": csrf, "action": "off"})
    assert client.post("/api/v1/jobs", json={"app": "hello"}, headers=user.headers).status_code == 201


# --- two replicas and the command line -------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABCLOUD, "maintenance", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _submit_status(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=headers)


def test_every_replica_follows_the_command_line(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """Two servers of one database: the switch thrown on one's shell (or through one's API) reaches the
    other within its cache time."""
    env = server_env(
        settings.home,
        (ADMIN_EMAIL, ADMIN_PASSWORD),
        database_url if backend() == "postgresql" else None,
        scheduler_interval_s="0.5",
    )
    cli_env = {
        **clean_env(),
        **{k: v for k, v in env.items() if k in ("LABCLOUD_HOME", "LABCLOUD_DATABASE_URL")},
    }
    with serve(env, tmp_path / "a.log") as first, serve(env, tmp_path / "b.log") as second:
        admin = login_headers(first, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert _submit_status(second, admin).status_code == 201

        r = _cli(cli_env, "on", "--message", MESSAGE, "--retry-after", "45")
        assert r.returncode == 0, r.stderr
        assert "maintenance: on" in r.stdout and MESSAGE in r.stdout
        started = time.monotonic()
        for url in (first, second):
            refused = eventually(
                lambda u=url: (x := _submit_status(u, admin)).status_code == 503 and x, 10, f"503 from {url}"
            )
            assert refused.headers["retry-after"] == "45" and refused.json()["detail"] == MESSAGE
        assert time.monotonic() - started < 8  # cached for at most ~2 s per process (and a busy machine)
        page = httpx.get(f"{second}/login")
        assert MESSAGE in page.text

        status = json.loads(_cli(cli_env, "status", "--json").stdout)
        assert status["enabled"] is True and status["changed_by"].startswith("cli:")
        assert datetime.fromisoformat(status["changed_at"]).tzinfo is not None

        # off through the first replica's API: the second takes jobs again
        r = httpx.put(f"{first}/api/v1/admin/maintenance", json={"enabled": False}, headers=admin)
        assert r.status_code == 200 and r.json()["enabled"] is False
        eventually(
            lambda: _submit_status(second, admin).status_code == 201, 10, "the second replica to resume"
        )
        assert "maintenance: off" in _cli(cli_env, "status").stdout

        bad = _cli(cli_env, "on", "--retry-after", "0", "--message", "tab\there")
        assert bad.returncode != 0
        assert re.search(r"retry_after_s", bad.stderr) and re.search(r"message", bad.stderr)
        assert _submit_status(first, admin).status_code == 201  # (a refused switch changed nothing)
