"""Upgrades (docs/upgrades.md), on SQLite and PostgreSQL.

An installation of an older release is upgraded as an operator would (``labcloud db upgrade``, then ``labcloud
serve``) and serves its old data: accounts, jobs in each state with their history and logs, files and job
outputs with their bytes; a job it left queued runs. A replica of the previous release, run from its own code,
serves on while the database is upgraded under it. A server starts on a database a newer release expanded.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from jobs_helpers import TERMINAL, write_app
from labcloud import security
from labcloud.db import migrate
from labcloud.registry import AppRegistry, bundled_apps_dir
from labcloud.settings import Settings
from labcloud.storage import open_storage
from live_server import LABCLOUD, eventually, serve, server_env
from testing.daemons import clean_env

PREVIOUS = "0021"  # the schema the older release left
# The code of the release before this one (schema 0024): a replica of it serves while this one migrates.
PREVIOUS_RELEASE = "f4bd9f00e5fb6a513963f39f5be60f77bae4ce41"
ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin@example.org", "admin-password-for-upgrades")
MAKER = ["sh", "-c", 'echo "$1" > "$0/out.txt"; echo made', "{output}", "{params.word}"]
WORD = {"type": "object", "properties": {"word": {"type": "string", "default": "w"}}}
EMAIL, PASSWORD = "old-user@example.org", "a password from before"

# The tables as that release had them (only the columns it wrote).
USERS = sa.table(
    "users",
    *(sa.column(n, sa.Uuid()) for n in ("id",)),
    *(
        sa.column(n, sa.String())
        for n in ("email", "name", "password_hash", "notify_email", "notify_apprise_url")
    ),
    *(sa.column(n, sa.Boolean()) for n in ("is_admin", "is_active", "must_change_password")),
    *(sa.column(n, sa.Integer()) for n in ("token_version", "jobs_submitted")),
    sa.column("storage_used_bytes", sa.BigInteger()),
    *(sa.column(n, sa.DateTime(timezone=True)) for n in ("created_at", "updated_at")),
)
PROJECTS = sa.table(
    "projects",
    *(sa.column(n, sa.Uuid()) for n in ("id", "personal_user_id")),
    *(sa.column(n, sa.String()) for n in ("slug", "name", "description", "over_quota")),
    sa.column("storage_used_bytes", sa.BigInteger()),
    *(sa.column(n, sa.DateTime(timezone=True)) for n in ("created_at", "updated_at")),
)
MEMBERS = sa.table(
    "project_members",
    *(sa.column(n, sa.Uuid()) for n in ("project_id", "user_id")),
    sa.column("role", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
JOBS = sa.table(
    "jobs",
    *(sa.column(n, sa.Uuid()) for n in ("id", "owner_id", "project_id")),
    *(
        sa.column(n, sa.String())
        for n in ("name", "app", "version", "entrypoint", "spec_hash", "state", "reason")
    ),
    *(sa.column(n, sa.String()) for n in ("message", "executor")),
    *(sa.column(n, sa.JSON()) for n in ("spec", "params", "inputs", "env", "resources", "tags", "usage")),
    *(sa.column(n, sa.Integer()) for n in ("exit_code", "attempts", "max_attempts", "run_number")),
    *(
        sa.column(n, sa.DateTime(timezone=True))
        for n in ("created_at", "updated_at", "started_at", "finished_at")
    ),
)
EVENTS = sa.table(
    "job_events",
    sa.column("job_id", sa.Uuid()),
    sa.column("at", sa.DateTime(timezone=True)),
    *(sa.column(n, sa.String()) for n in ("from_state", "to_state", "reason", "message")),
)
FILES = sa.table(
    "files",
    *(sa.column(n, sa.Uuid()) for n in ("id", "project_id", "owner_id", "job_id")),
    *(sa.column(n, sa.String()) for n in ("path", "parent", "name", "kind", "sha256", "blob_key")),
    sa.column("size", sa.BigInteger()),
    *(sa.column(n, sa.DateTime(timezone=True)) for n in ("created_at", "modified_at")),
)


def _populate(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """Rows and objects as the older release wrote them: a user with a personal project, a file, and jobs
    that succeeded (with an output and a log), failed, were cancelled, and one still queued."""
    now = datetime.now(UTC)
    user_id, project_id = uuid.uuid4(), uuid.uuid4()
    storage = open_storage(settings)
    stored: dict[str, tuple[str, bytes]] = {}
    for path, content in (("data/trace.csv", b"t,v\n0,1.5\n"), ("out.txt", b"result of the old job\n")):
        source = tmp_path / "object"
        source.write_bytes(content)
        key = storage.new_key()
        storage.put_file(key, source)
        stored[path] = (key, content)
    spec = AppRegistry([bundled_apps_dir()]).resolve("hello").entrypoint
    jobs: dict[str, uuid.UUID] = {s: uuid.uuid4() for s in ("succeeded", "failed", "cancelled", "queued")}
    engine = sa.create_engine(settings.effective_database_url)
    with engine.begin() as conn:
        conn.execute(
            USERS.insert().values(
                id=user_id,
                email=EMAIL,
                name="Old User",
                password_hash=security.hash_password(PASSWORD),
                notify_email="always",
                notify_apprise_url="",
                is_admin=True,
                is_active=True,
                must_change_password=False,
                token_version=0,
                jobs_submitted=len(jobs),
                storage_used_bytes=sum(len(c) for _, c in stored.values()),
                created_at=now - timedelta(days=30),
                updated_at=now - timedelta(days=30),
            )
        )
        conn.execute(
            PROJECTS.insert().values(
                id=project_id,
                personal_user_id=user_id,
                slug=f"user-{user_id.hex[:12]}",
                name="Old User (personal)",
                description="",
                over_quota="refuse",
                storage_used_bytes=sum(len(c) for _, c in stored.values()),
                created_at=now - timedelta(days=30),
                updated_at=now - timedelta(days=30),
            )
        )
        conn.execute(
            MEMBERS.insert().values(project_id=project_id, user_id=user_id, role="owner", created_at=now)
        )
        for number, (state, job_id) in enumerate(jobs.items(), start=1):
            at = now - timedelta(days=10 - number)
            ended = state != "queued"
            conn.execute(
                JOBS.insert().values(
                    id=job_id,
                    owner_id=user_id,
                    project_id=project_id,
                    name=f"old {state}",
                    app="hello",
                    version="1.0",
                    entrypoint="greet",
                    spec=spec.model_dump(mode="json"),
                    spec_hash=spec.spec_hash(),
                    state=state,
                    reason="app_error" if state == "failed" else None,
                    message={"failed": "exited with code 3", "cancelled": "cancelled before it started"}.get(
                        state, ""
                    ),
                    executor="local",
                    params={"name": "before", "times": 1},
                    inputs={},
                    env={},
                    resources={"cpus": 1, "memory_mb": 512, "gpus": 0, "timeout_s": 600},
                    tags={"era": "old"},
                    usage={},
                    exit_code=3 if state == "failed" else 0 if state == "succeeded" else None,
                    attempts=1 if state in ("succeeded", "failed") else 0,
                    max_attempts=3,
                    run_number=number,
                    created_at=at,
                    updated_at=at,
                    started_at=at if state in ("succeeded", "failed") else None,
                    finished_at=at if ended else None,
                )
            )
            conn.execute(
                EVENTS.insert().values(job_id=job_id, at=at, from_state=None, to_state="queued", message="")
            )
            if ended:
                conn.execute(
                    EVENTS.insert().values(
                        job_id=job_id,
                        at=at,
                        from_state="queued" if state == "cancelled" else "running",
                        to_state=state,
                        reason="app_error" if state == "failed" else None,
                        message="",
                    )
                )
        done = jobs["succeeded"]
        rows = [
            ("data", "folder", None, None),
            ("data/trace.csv", "file", None, "data/trace.csv"),
            ("jobs", "folder", None, None),
            (f"jobs/{done}", "folder", done, None),
            (f"jobs/{done}/out.txt", "file", done, "out.txt"),
        ]
        for path, kind, job_id, content_of in rows:
            key, content = stored[content_of] if content_of else (None, b"")
            parent, _, name = path.rpartition("/")
            conn.execute(
                FILES.insert().values(
                    id=uuid.uuid4(),
                    project_id=project_id,
                    owner_id=user_id,
                    job_id=job_id,
                    path=path,
                    parent=parent,
                    name=name,
                    kind=kind,
                    sha256=hashlib.sha256(content).hexdigest() if content_of else None,
                    blob_key=key,
                    size=len(content),
                    created_at=now,
                    modified_at=now,
                )
            )
    engine.dispose()
    log = settings.jobs_dir / str(jobs["succeeded"]) / "job.log"
    log.parent.mkdir(parents=True)
    log.write_text("Hello, before!\n")
    return {"jobs": jobs, "files": {p: c for p, (_, c) in stored.items()}}


def test_a_database_of_the_previous_release_is_upgraded_and_served(
    empty_database: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=empty_database)
    migrate.upgrade(settings, PREVIOUS)  # the installation as the older release left it
    old = _populate(settings, tmp_path)

    upgraded = subprocess.run(
        [sys.executable, "-m", "labcloud.cli", "db", "upgrade"],
        env={**clean_env(), "LABCLOUD_HOME": str(home), "LABCLOUD_DATABASE_URL": empty_database},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    head = migrate.head_revision(settings)
    assert head != PREVIOUS and f"database schema is at {head}" in upgraded.stderr

    env = server_env(
        home,
        ("unused@example.org", "unused-password-1"),
        empty_database,
        local_memory_mb="4096",
        scheduler_interval_s="0.5",
    )
    with serve(env, tmp_path / "server.log") as url, httpx.Client(base_url=url, timeout=30) as http:
        token = http.post("/api/v1/auth/login", data={"username": EMAIL, "password": PASSWORD})
        assert token.status_code == 200, token.text
        h = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert http.get("/api/v1/me", headers=h).json()["email"] == EMAIL

        listed = http.get("/api/v1/jobs", headers=h, params={"limit": 50})
        assert listed.status_code == 200, listed.text
        by_id = {j["id"]: j for j in listed.json()["items"]}
        for state in ("succeeded", "failed", "cancelled"):
            job = by_id[str(old["jobs"][state])]
            assert (job["state"], job["name"], job["tags"]) == (state, f"old {state}", {"era": "old"})
        failed = http.get(f"/api/v1/jobs/{old['jobs']['failed']}", headers=h).json()
        assert (failed["reason"], failed["exit_code"]) == ("app_error", 3)
        done = old["jobs"]["succeeded"]
        history = http.get(f"/api/v1/jobs/{done}/events", headers=h).json()
        assert [e["to_state"] for e in history] == ["queued", "succeeded"]
        assert http.get(f"/api/v1/jobs/{done}/logs", headers=h).text == "Hello, before!\n"
        [output] = http.get(f"/api/v1/jobs/{done}/outputs", headers=h).json()
        assert output["path"].endswith("out.txt")

        for path, content in (
            ("data/trace.csv", old["files"]["data/trace.csv"]),
            (f"jobs/{done}/out.txt", old["files"]["out.txt"]),
        ):
            got = http.get(f"/api/v1/files/{path}", headers=h)
            assert got.status_code == 200, got.text
            assert got.content == content
        assert {
            e["path"] for e in http.get("/api/v1/files", headers=h, params={"prefix": "data"}).json()["items"]
        } == {"data/trace.csv"}

        queued = old["jobs"]["queued"]  # left waiting by the older release: the new one runs it

        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/api/v1/jobs/{queued}", headers=h).json()
            return job if job["state"] in TERMINAL else None

        job = eventually(ended, 120, "the old queued job to end")
        assert job["state"] == "succeeded", job
        assert "Hello, before!" in http.get(f"/api/v1/jobs/{queued}/logs", headers=h).text


# -- a replica of the previous release beside the upgrade --------------------------------------------------


def _previous_release(tmp_path: Path) -> Path:
    """The previous release's ``src`` folder, from this checkout's history (fetched from its origin when
    the clone is shallow)."""

    def run_archive() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "src"],
            capture_output=True,
            timeout=120,
            check=False,
        )

    made = run_archive()
    if made.returncode != 0:
        subprocess.run(
            ["git", "-C", str(ROOT), "fetch", "--quiet", "--depth=1", "origin", PREVIOUS_RELEASE],
            capture_output=True,
            timeout=120,
            check=False,
        )
        made = run_archive()
    archive = made
    assert archive.returncode == 0, (
        f"the previous release ({PREVIOUS_RELEASE}) is not in this checkout's history (a shallow clone? "
        f"git fetch --unshallow): {made.stderr.decode(errors='replace')}"
    )
    with tarfile.open(fileobj=io.BytesIO(made.stdout)) as tar:
        tar.extractall(tmp_path / "previous", filter="data")
    return tmp_path / "previous" / "src"


def _db_upgrade(env: dict[str, str]) -> str:
    done = subprocess.run(
        [*LABCLOUD, "db", "upgrade"], env={**clean_env(), **env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def _login(http: httpx.Client) -> dict[str, str]:
    token = http.post("/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _job_runs(http: httpx.Client, h: dict[str, str], word: str) -> str:
    """Submit a job of the test app, wait for it to succeed; its id."""
    r = http.post("/api/v1/jobs", json={"app": "maker", "params": {"word": word}}, headers=h)
    assert r.status_code == 201, r.text
    job_id = str(r.json()["id"])

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}", headers=h).json()
        return job if job["state"] in TERMINAL else None

    assert eventually(ended, 120, f"job {job_id} to end")["state"] == "succeeded"
    out = http.get(f"/api/v1/files/jobs/{job_id}/out.txt", headers=h)
    assert out.status_code == 200 and out.text == f"{word}\n", out.text
    return job_id


def test_a_replica_of_the_previous_release_serves_on_while_the_database_is_upgraded(
    empty_database: str, tmp_path: Path
) -> None:
    previous = _previous_release(tmp_path)
    home = tmp_path / "home"
    write_app(
        home / "apps",
        "maker",
        MAKER,
        parameters=WORD,
        resources={"cpus": 0.1, "memory_mb": 32, "timeout_s": 60},
    )
    env = server_env(
        home, ADMIN, empty_database, local_cpus="2", local_memory_mb="4096", scheduler_interval_s="0.5"
    )
    old_env = {**env, "PYTHONPATH": str(previous)}  # the previous release's code, same dependencies
    assert "database schema is at 0024" in _db_upgrade(old_env)  # as that release left the database

    with serve(old_env, tmp_path / "old.log") as old_url, httpx.Client(base_url=old_url, timeout=30) as old:
        h = _login(old)
        assert old.put("/api/v1/files/notes/a.txt", content=b"before", headers=h).status_code == 201
        before = _job_runs(old, h, "before")

        said = _db_upgrade(env)  # this release's migrations, while the older replica serves
        head = migrate.head_revision(Settings(home=home, database_url=empty_database))
        assert head != "0024" and f"database schema is at {head}" in said

        # the older replica goes on serving everything, writing included
        h = _login(old)
        assert old.get("/api/v1/files/notes/a.txt", headers=h).content == b"before"
        assert old.put("/api/v1/files/notes/b.txt", content=b"during", headers=h).status_code == 201
        during = _job_runs(old, h, "during")
        listed = {j["id"] for j in old.get("/api/v1/jobs", headers=h).json()["items"]}
        assert {before, during} <= listed

        # and a replica of this release beside it sees the same, and runs jobs too
        with serve(env, tmp_path / "new.log") as new_url, httpx.Client(base_url=new_url, timeout=30) as new:
            h2 = _login(new)
            assert new.get("/api/v1/files/notes/b.txt", headers=h2).content == b"during"
            jobs = {j["id"]: j for j in new.get("/api/v1/jobs", headers=h2).json()["items"]}
            assert jobs[during]["state"] == "succeeded" and jobs[during]["outputs_deleted_at"] is None
            after = _job_runs(new, h2, "after")
            assert old.get(f"/api/v1/jobs/{after}", headers=h).json()["state"] == "succeeded"


def test_a_server_starts_on_a_database_a_newer_release_expanded(empty_database: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_app(
        home / "apps",
        "maker",
        MAKER,
        parameters=WORD,
        resources={"cpus": 0.1, "memory_mb": 32, "timeout_s": 60},
    )
    env = server_env(
        home, ADMIN, empty_database, local_cpus="2", local_memory_mb="4096", scheduler_interval_s="0.5"
    )
    _db_upgrade(env)
    engine = sa.create_engine(empty_database)
    with engine.begin() as conn:  # what a newer release's expand step may do, and its revision
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN priority INTEGER DEFAULT 0 NOT NULL"))
        conn.execute(sa.text("CREATE TABLE future_things (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with serve(env, tmp_path / "server.log") as url, httpx.Client(base_url=url, timeout=30) as http:
        _job_runs(http, _login(http), "later")
    assert "newer than this release's" in (tmp_path / "server.log").read_text()
