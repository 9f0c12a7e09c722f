"""The service as an operator meets it: configuration, CLI, first start, probes, OpenAPI."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import backend
from labcloud.api.app import create_app
from labcloud.settings import Settings
from live_server import Server, eventually, login_headers
from testing.daemons import free_port

LABCLOUD = [sys.executable, "-m", "labcloud.cli"]


def run_cli(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        LABCLOUD + args, env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, settings: Settings) -> Iterator[dict[str, str]]:
    """The environment of a CLI run on the shared test database (emptied after, via ``settings``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}
    env["LABCLOUD_HOME"] = str(tmp_path / "home")
    if backend() == "postgresql":
        env["LABCLOUD_DATABASE_URL"] = database_url
    yield env


def test_health_ready_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    database = "postgresql" if backend() == "postgresql" else "sqlite"
    assert ready == {"status": "ready", "database": database, "storage": "local", "dispatching": True}
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "labcloud"
    for path in ("/api/v1/auth/login", "/api/v1/me", "/api/v1/me/tokens", "/api/v1/users/{user_id}"):
        assert path in spec["paths"]
    schemes = spec["components"]["securitySchemes"]
    assert any(
        s.get("flows", {}).get("password", {}).get("tokenUrl") == "/api/v1/auth/login"
        for s in schemes.values()
    )
    assert "swagger-ui" in client.get("/docs").text


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    from labcloud.api.app import create_app

    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite3")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        client.app.state.ctx.db.engine.dispose()  # type: ignore[attr-defined]
        (tmp_path / "db.sqlite3").unlink()
        (tmp_path / "db.sqlite3").mkdir()  # a directory where the database file was: cannot be opened
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["title"] == "Not ready"
        assert client.get("/healthz").status_code == 200


def test_unknown_path_is_a_problem_document(client: TestClient) -> None:
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404


def test_database_is_the_configured_one(client: TestClient, settings: Settings) -> None:
    with client.app.state.ctx.db.engine.connect() as conn:  # type: ignore[attr-defined]
        if settings.is_sqlite:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        else:
            version = conn.exec_driver_sql("SHOW server_version_num").scalar()
            assert int(str(version)) >= 150000


def test_settings_env_over_file_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\naccess_token_minutes = 5\n')
    monkeypatch.setenv("LABCLOUD_CONFIG", str(config))
    monkeypatch.setenv("LABCLOUD_PORT", "9002")
    monkeypatch.setenv("LABCLOUD_HOME", str(tmp_path / "data"))
    s = Settings()
    assert s.port == 9002  # environment wins
    assert s.host == "0.0.0.0" and s.access_token_minutes == 5  # from the file
    assert s.open_signup is False  # default
    assert s.home == tmp_path / "data"
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'data' / 'labcloud.sqlite3').resolve()}"


def test_generated_secret_key_is_kept_private_and_stable(tmp_path: Path) -> None:
    s1 = Settings(home=tmp_path)
    key = s1.signing_key
    assert len(key) >= 32
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert Settings(home=tmp_path).signing_key == key


def test_init_config_writes_private_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = {**os.environ, "LABCLOUD_HOME": str(tmp_path / "home")}
    env.pop("LABCLOUD_CONFIG", None)
    r = run_cli(["init-config"], env)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "home" / "labcloud.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert re.search(r'secret_key = "[\w-]{40,}"', first)
    r = run_cli(["init-config"], env)
    assert r.returncode != 0 and "--force" in r.stderr
    assert path.read_text() == first
    r = run_cli(["init-config", "--force"], env)
    assert r.returncode == 0
    second = path.read_text()
    assert second != first  # fresh secrets
    # the written file is a valid configuration
    env["LABCLOUD_CONFIG"] = str(path)
    assert run_cli(["db", "current"], env).returncode == 0


def test_admin_create_user_from_a_script(cli_env: dict[str, str], database_url: str) -> None:
    if backend() == "postgresql":
        assert run_cli(["db", "upgrade"], cli_env).returncode == 0
    r = run_cli(
        ["admin", "create-user", "Ops@Example.org", "--admin", "--password-stdin"], cli_env, "s3cret-pass-1\n"
    )
    assert r.returncode == 0, r.stderr
    assert "created admin ops@example.org" in r.stderr
    assert "s3cret-pass-1" not in r.stdout + r.stderr
    r = run_cli(["admin", "create-user", "ops@example.org", "--password-stdin"], cli_env, "other-pass-12\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run_cli(["admin", "create-user", "weak@example.org", "--password-stdin"], cli_env, "short\n")
    assert r.returncode == 1 and "at least" in r.stderr
    settings = Settings(
        home=Path(cli_env["LABCLOUD_HOME"]), database_url=cli_env.get("LABCLOUD_DATABASE_URL", "")
    )
    from labcloud.api.app import create_app

    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/api/v1/auth/login", data={"username": "ops@example.org", "password": "s3cret-pass-1"}
        )
        assert r.status_code == 200
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
        assert me["is_admin"] is True


def test_serve_migrates_creates_admin_once_and_answers(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The real server process, as `labcloud serve` starts it."""
    if backend() == "postgresql":
        # PostgreSQL is never migrated implicitly: serve refuses and says what to do.
        fresh = cli_env["LABCLOUD_DATABASE_URL"]
        assert fresh  # the shared test database is already migrated; check the refusal on an empty one
        import psycopg

        from conftest import PG_SERVER

        name = f"labcloud_empty_{os.getpid()}"
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            env = {**cli_env, "LABCLOUD_DATABASE_URL": fresh.rsplit("/", 1)[0] + "/" + name}
            r = run_cli(["serve", "--port", str(free_port())], env)
            assert r.returncode == 1
            assert "labcloud db upgrade" in r.stderr
            assert run_cli(["db", "upgrade"], env).returncode == 0
            _serve_and_check(env)
        finally:
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        _serve_and_check(cli_env)
        assert (Path(cli_env["LABCLOUD_HOME"]) / "labcloud.sqlite3").exists()


def _serve_and_check(env: dict[str, str]) -> None:
    port = free_port()
    for attempt in range(2):
        proc = subprocess.Popen(
            [*LABCLOUD, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            lines = []
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "Uvicorn running on" in line:
                    break
            output = "".join(lines)
            assert f"http://127.0.0.1:{port}" in output, output
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert r.status_code == 200
            if attempt == 0:
                assert "created the first administrator account" in output
                password = re.search(r"password: (\S+)", output)
                assert password is not None
                login = httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/auth/login",
                    data={"username": "admin@labcloud.local", "password": password.group(1)},
                    timeout=10,
                )
                assert login.status_code == 200
                # the password is printed once, to the console, never through the log
                assert output.count(password.group(1)) == 1
            else:
                assert "created the first administrator account" not in output
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
def test_readyz_reports_an_unreachable_store(storage_backend: str, settings: Settings) -> None:
    settings.s3_endpoint_url = "http://127.0.0.1:9"  # nothing listens there
    with TestClient(create_app(settings, dispatch=False)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "file store" in r.json()["detail"]


def test_the_data_dir_is_private_to_labcloud_s_user(server: Server, settings: Settings) -> None:
    """After a job ran and a file was uploaded, nothing in the data dir is open to the group or others:
    the home is 0700, and the database, the secret key, the blobs and the job logs have no such bits."""
    home = settings.home
    with httpx.Client(base_url=server.url, headers=login_headers(server.url), timeout=30) as http:
        r = http.put("/api/v1/files/in/data.txt", content=b"an uploaded file")
        assert r.status_code == 201, r.text
        r = http.post("/api/v1/jobs", json={"app": "hello", "params": {"name": "privacy", "times": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        job = eventually(ended, 120, "the job to end")
        assert job["state"] == "succeeded", (job, http.get(f"/api/v1/jobs/{job_id}/logs").text)
        assert [o["path"] for o in http.get(f"/api/v1/jobs/{job_id}/outputs").json()] == ["greeting.txt"]

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    expected = [home / "secret_key", home / "jobs" / job_id / "job.log"]
    if backend() == "sqlite":
        expected.append(home / "labcloud.sqlite3")
    for path in expected:
        assert path.is_file(), f"{path} is missing: this test would check nothing of it"
    blobs = [p for p in (home / "files").rglob("*") if p.is_file()]
    assert len(blobs) >= 2, blobs  # the upload and the job's output
    open_to_others = {
        str(path.relative_to(home)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in [home, *home.rglob("*")]
        if path.lstat().st_mode & 0o077
    }
    assert open_to_others == {}, open_to_others
