"""Shared fixtures. The suite runs on SQLite by default and on PostgreSQL with LABCLOUD_TEST_DB=postgresql.

On PostgreSQL the suite creates its own database on the server at LABCLOUD_TEST_PG (default
127.0.0.1:5432) and drops it at the end; if that server cannot be reached, the tests fail.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete

from labcloud.api.app import create_app
from labcloud.db import migrate
from labcloud.db.models import Base
from labcloud.settings import Settings

ADMIN_EMAIL = "root@example.org"
ADMIN_PASSWORD = "admin-password-for-tests"
PG_SERVER = os.environ.get("LABCLOUD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def backend() -> str:
    return os.environ.get("LABCLOUD_TEST_DB", "sqlite")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database for the whole run; tests empty its tables after themselves."""
    if backend() == "postgresql":
        name = f"labcloud_test_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        url = f"{base}/{name}"
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'labcloud.sqlite3'}"
    migrate.upgrade(Settings(home=tmp_path_factory.mktemp("migrate-home"), database_url=url))
    yield url
    if backend() == "postgresql":
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    s = Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-" + secrets.token_hex(16),
        initial_admin_email=ADMIN_EMAIL,
        initial_admin_password=ADMIN_PASSWORD,
        min_password_length=10,
        local_cpus=2,
        local_memory_mb=4096,
        kill_grace_s=1.0,
        scheduler_interval_s=0.5,
        apps_check_interval_s=0,
    )
    yield s
    kill_processes_under(s.home)
    _empty_tables(database_url)


def kill_processes_under(home: Path) -> None:
    """Job supervisors outlive the server on purpose; a test must not leave its own behind."""
    marker = str(home)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
        except psutil.Error:
            pass


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def login(client: TestClient, email: str, password: str) -> str:
    r = client.post("/api/v1/auth/login", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture
def admin(client: TestClient) -> Account:
    token = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = client.get("/api/v1/me", headers=bearer(token)).json()
    return Account(uuid.UUID(me["id"]), ADMIN_EMAIL, ADMIN_PASSWORD, token)


@pytest.fixture
def make_user(client: TestClient, admin: Account) -> Any:
    def make(email: str | None = None, password: str = "user-password-1", is_admin: bool = False) -> Account:
        email = email or f"user-{secrets.token_hex(4)}@example.org"
        r = client.post(
            "/api/v1/users",
            json={"email": email, "password": password, "name": "Test User", "is_admin": is_admin},
            headers=admin.headers,
        )
        assert r.status_code == 201, r.text
        return Account(uuid.UUID(r.json()["id"]), email, password, login(client, email, password))

    return make


@pytest.fixture
def user(make_user: Any) -> Account:
    account: Account = make_user()
    return account
