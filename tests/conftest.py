"""Shared fixtures. The suite runs on SQLite by default and on PostgreSQL with LABCLOUD_TEST_DB=postgresql.

On PostgreSQL the suite creates its own database on the server at LABCLOUD_TEST_PG (default
127.0.0.1:5432) and drops it at the end; if that server cannot be reached, the tests fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import create_engine, delete

from labcloud import security
from labcloud.api.app import create_app
from labcloud.db import migrate
from labcloud.db.models import Base
from labcloud.settings import Settings
from live_server import ADMIN_EMAIL as SERVER_ADMIN_EMAIL
from live_server import ADMIN_PASSWORD as SERVER_ADMIN_PASSWORD
from live_server import Server, serve, server_env

ADMIN_EMAIL = "root@example.org"
ADMIN_PASSWORD = "admin-password-for-tests"
PG_SERVER = os.environ.get("LABCLOUD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def backend() -> str:
    return os.environ.get("LABCLOUD_TEST_DB", "sqlite")


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing() -> Iterator[None]:
    """Argon2 at its lowest cost in this process: the suite creates and logs in hundreds of accounts, and
    the production cost (~0.1-0.25 s a hash here, on purpose) would be a third of its time. The hashing
    code and the format are the same, the hash checked for unknown accounts too; servers started as
    processes keep the full cost."""
    hasher = Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "_password_hash", PasswordHash((hasher,)))
        patch.setattr(security, "_DUMMY_HASH", hasher.hash(secrets.token_urlsafe(16)))
        yield


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
        # No container engine unless the test names one (engines.use_engine): with "auto", every app built on
        # these settings asked this machine's Podman for leftover containers as it started (~0.1-0.2 s a
        # test). How "auto" chooses is tested in tests/test_containers.py.
        container_engine="none",
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
def open_scratch() -> Iterator[Path]:
    """A scratch folder (under /tmp) any user may pass through. Pytest's own are private to the user who
    runs the tests; a job run without a sandbox reaches its folder by its real path, as its own user."""
    folder = Path(tempfile.mkdtemp(prefix="labcloud-test-"))
    folder.chmod(0o755)
    yield folder
    kill_processes_under(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
def empty_database(tmp_path: Path, database_url: str) -> Iterator[str]:
    """A database of its own (the suite's, ``database_url``, is already at the newest revision; asking for
    it keeps this test in the PostgreSQL pass)."""
    if backend() != "postgresql":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = f"labcloud_migrate_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pull_settings(settings: Settings) -> Settings:
    """Jobs go to pull workers (whom a test plays by hand)."""
    settings.executor = "pull"
    settings.lease_seconds = 30
    return settings


@pytest.fixture
def pclient(pull_settings: Settings, client: TestClient) -> Iterator[TestClient]:
    yield client


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
            json={
                "email": email,
                "password": password,
                "name": "Test User",
                "is_admin": is_admin,
                "must_change_password": False,
            },
            headers=admin.headers,
        )
        assert r.status_code == 201, r.text
        return Account(uuid.UUID(r.json()["id"]), email, password, login(client, email, password))

    return make


@pytest.fixture
def user(make_user: Any) -> Account:
    account: Account = make_user()
    return account


# -- a live server ------------------------------------------------------------------------------------


@pytest.fixture
def server(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[Server]:
    """``labcloud serve`` on a free port with its own data dir (``settings.home``, so leftover job processes
    are killed and the shared test database is emptied afterwards by the ``settings`` fixture)."""
    env = server_env(
        settings.home,
        (SERVER_ADMIN_EMAIL, SERVER_ADMIN_PASSWORD),
        database_url if backend() == "postgresql" else None,
        scheduler_interval_s="0.5",
        local_cpus="2",
        local_memory_mb="4096",
    )
    if settings.storage_url:  # a test that asked for storage_backend "s3"
        env |= {
            "LABCLOUD_STORAGE_URL": settings.storage_url,
            "LABCLOUD_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "LABCLOUD_S3_REGION": settings.s3_region,
            "LABCLOUD_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
            "LABCLOUD_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        }
    if settings.container_engine != "auto":  # "none", or the engine a test named (engines.use_engine)
        env |= {
            "LABCLOUD_CONTAINER_ENGINE": settings.container_engine,
            "LABCLOUD_DOCKER_HOST": settings.docker_host,
            "LABCLOUD_PODMAN_OPTIONS": json.dumps(settings.podman_options),
            "LABCLOUD_CONTAINER_RUN_OPTIONS": json.dumps(settings.container_run_options),
        }
    if settings.tes_network != "none":
        env["LABCLOUD_TES_NETWORK"] = settings.tes_network
    if settings.container_auth_file is not None:
        env["LABCLOUD_CONTAINER_AUTH_FILE"] = str(settings.container_auth_file)
    with serve(env, tmp_path / "server.log") as url:
        yield Server(url, tmp_path / "client" / "client.json")


# -- storage backends ------------------------------------------------------------------------------------
# A real SeaweedFS (tests/seaweed.py) for everything that runs on S3: fixtures `seaweedfs` and `s3_bucket`;
# a real Slurm (tests/slurm.py): `slurm_cluster`, `slurm`; real container engines (tests/engines.py):
# `docker_cli` (a private dockerd) and `podman_cli` (a private Podman storage), with labcloud/busybox:1;
# a real SMTP server (tests/mail_helpers.py) and a real webhook receiver (tests/webhook_helpers.py).
pytest_plugins = ("seaweed", "slurm", "engines", "mail_helpers", "webhook_helpers")

STORAGE_BACKENDS = ("local", "s3")


@pytest.fixture(params=STORAGE_BACKENDS, ids=STORAGE_BACKENDS)
def storage_backend(request: pytest.FixtureRequest, settings: Settings) -> str:
    """Run the test once per blob store: ``"local"`` (the default disk store) and ``"s3"`` (SeaweedFS).

    How a test opts in: request ``storage_backend`` as an argument; ``settings`` and everything built on it
    (``app``, ``client``, ``admin``, ``user`` ...) then use that store, whatever the argument order (a hook
    below sets this fixture up before the others). For ``"s3"`` the settings point at a fresh bucket on
    the session's SeaweedFS (``s3://<bucket>/labcloud``), deleted with its objects after the test; the
    server starts only when a test first needs it. Returns the backend's name.
    """
    backend_name: str = request.param
    if backend_name == "s3":
        from pydantic import SecretStr

        server = request.getfixturevalue("seaweedfs")
        bucket = request.getfixturevalue("s3_bucket")
        settings.storage_url = f"s3://{bucket}/labcloud"
        settings.s3_endpoint_url = server.endpoint_url
        settings.s3_region = server.region
        settings.s3_access_key_id = server.access_key
        settings.s3_secret_access_key = SecretStr(server.secret_key)
    return backend_name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Set ``storage_backend`` up first, so it has changed ``settings`` before any app is built on them.

    Tests of what only PostgreSQL has (``postgresql_only``) are deselected on SQLite.
    On PostgreSQL (the second pass of scripts/test.sh) keep only what the database can change: tests that
    reach it (through ``database_url``), on the local store. The browser, the client CLI (``db_agnostic``),
    the S3 variants and the tests without a database ran in the SQLite pass; they are deselected, and
    pytest's summary counts them.

    Then the files are put in the order their processes take them up in: the longest first.
    """
    for item in items:
        names = getattr(item, "fixturenames", None)
        if isinstance(names, list) and "storage_backend" in names and names[0] != "storage_backend":
            names.remove("storage_backend")
            names.insert(0, "storage_backend")
    keep, dropped = [], []
    for item in items:
        (keep if _runs_in_this_pass(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    items.sort(key=_file_order(items))


# The files that take longest, longest first: seconds on the 2-core test machine in the SQLite and the
# PostgreSQL pass. scripts/test.sh hands whole files to its processes in the order of the items
# (--dist loadfile --no-loadscope-reorder); xdist's own order, most tests first, left these files of a few
# long tests for the end, where one process ran them alone after the other had run out of work.
LONGEST_FIRST = (
    "test_tes_snakemake.py",  # 60 (200 when it builds its image first) / -
    "test_deploy_image.py",  # 300 (600 when it builds its base and wheels first) / -
    "test_workers.py",  # 70 / 115
    "test_cli_client.py",  # 100 / -
    "test_backup.py",  # 90 / - (four live servers, SQLite and PostgreSQL in one pass; SeaweedFS)
    "test_upgrade_previous.py",  # 100 / 140 (five live servers, two of them the previous release)
    "test_newcomer.py",  # 85 / 6
    "test_crash.py",  # 40 / 40
    "test_scheduling.py",  # 30 / 32
    "test_service.py",  # 25 / 25
    "test_nginx_proxy.py",  # 55 / 55
    "test_leader.py",  # 10 / 16
    "test_bench_containers.py",  # 13 / -
    "e2e/test_docs.py",  # 9 / -
)


def _file_order(items: list[pytest.Item]) -> Callable[[pytest.Item], tuple[int, int]]:
    """The sort key of an item: its file's place in LONGEST_FIRST, then (the other files) the file's number of
    tests, most first. Each file's items stay together and in their order (the sort is stable)."""
    here = Path(__file__).parent
    counts = Counter(item.path for item in items)

    def key(item: pytest.Item) -> tuple[int, int]:
        name = item.path.relative_to(here).as_posix() if item.path.is_relative_to(here) else item.path.name
        rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, -counts[item.path]

    return key


def _runs_in_this_pass(item: pytest.Item) -> bool:
    if backend() != "postgresql":
        return item.get_closest_marker("postgresql_only") is None
    if os.environ.get("LABCLOUD_TEST_EVERYTHING"):
        return True
    callspec = getattr(item, "callspec", None)
    on_s3 = callspec is not None and callspec.params.get("storage_backend") == "s3"
    uses_db = "database_url" in getattr(item, "fixturenames", ())
    agnostic = item.get_closest_marker("db_agnostic") or item.get_closest_marker("e2e")
    return uses_db and not on_s3 and not agnostic
