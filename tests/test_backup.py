"""Backups and restores (``labcloud backup`` / ``labcloud restore``), with real parts only.

A real server with accounts, files, finished jobs, a job running and a resumable upload half done is backed
up while it keeps working; its home (and database) are wiped; the backup is restored into a new, empty
home, and a server started on it shows every account (same passwords), file (same SHA-256, read back
through the API) and job (same ids, states, outputs, logs) as they were, while the half upload is no file.
On SQLite and on PostgreSQL (databases of its own, created and dropped here). Then: an S3 store
(SeaweedFS) with its objects copied into a backup on S3 or only listed; the retention of dated backups; a
backup of an older schema migrated forward on restore; a damaged backup refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from conftest import PG_SERVER, kill_processes_under
from jobs_helpers import TERMINAL, py, write_app
from labcloud.api.app import create_app
from labcloud.db import migrate
from labcloud.services import backup, backup_restore
from labcloud.services.backup_places import STAMP_FORMAT, BackupError, parse_place, prune, to_keep
from labcloud.services.backup_settings import REDACTED
from labcloud.settings import Settings
from live_server import LABCLOUD, eventually, login_headers, serve, server_env
from seaweed import SeaweedFS
from testing.daemons import clean_env

ADMIN = ("backup-admin@example.org", "backup-admin-password")
USER = ("backup-user@example.org", "backup-user-password")
PG_BASE = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
TUS = {"Tus-Resumable": "1.0.0"}

# Reads its input, waits, writes a result naming the word and the input's SHA-256, exits with a code.
DIGEST = [
    *py("""
    import hashlib, os, pathlib, sys, time
    out, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes()
    word = os.environ.get("LABCLOUD_PARAM_WORD", "")
    print("start", word, flush=True)
    time.sleep(float(os.environ.get("LABCLOUD_PARAM_SECONDS", "0")))
    (out / "result.txt").write_text(word + " " + hashlib.sha256(data).hexdigest())
    print("end", word, flush=True)
    sys.exit(int(os.environ.get("LABCLOUD_PARAM_CODE", "0")))
    """),
    "{output}",
    "{inputs.data}",
]


def write_digest_app(apps: Path) -> None:
    write_app(
        apps,
        "digest",
        DIGEST,
        parameters={
            "type": "object",
            "properties": {
                "word": {"type": "string", "default": ""},
                "seconds": {"type": "number", "default": 0},
                "code": {"type": "integer", "default": 0},
            },
        },
        inputs={"data": {"type": "file"}},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def labcloud(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABCLOUD, *args],
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class Api:
    """One account on a live server, logged in with its password."""

    def __init__(self, url: str, email: str, password: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers=login_headers(url, email, password), timeout=60)

    def put(self, path: str, data: bytes) -> None:
        r = self.http.put(f"/api/v1/files/{path}", content=data)
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == sha256(data)

    def download(self, path: str) -> bytes:
        r = self.http.get(f"/api/v1/files/{path}")
        assert r.status_code == 200, (path, r.text)
        return r.content

    def tree(self, folder: str = "") -> dict[str, tuple[int, str]]:
        """Every file of the account's space: path → (size, SHA-256), as the API lists them."""
        found: dict[str, tuple[int, str]] = {}
        r = self.http.get("/api/v1/files", params={"prefix": folder, "limit": 200})
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            if item["type"] == "folder" and not (folder == "" and item["path"] == "projects"):
                found |= self.tree(item["path"])
            elif item["type"] == "file":
                found[item["path"]] = (item["size"], item["sha256"])
        return found

    def submit(self, word: str, data: str, seconds: float = 0, code: int = 0) -> str:
        body = {"app": "digest", "params": {"word": word, "seconds": seconds, "code": code}}
        r = self.http.post("/api/v1/jobs", json={**body, "inputs": {"data": data}})
        assert r.status_code == 201, r.text
        job_id: str = r.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        return job

    def wait_end(self, job_id: str) -> dict[str, Any]:
        return eventually(
            lambda: (j := self.job(job_id))["state"] in TERMINAL and j, 120, f"job {job_id} to end"
        )

    def summary(self, job_id: str) -> dict[str, Any]:
        """What must survive a restore: state, reason, exit code, attempts, outputs with their SHA-256."""
        job = self.job(job_id)
        outputs = self.http.get(f"/api/v1/jobs/{job_id}/outputs").json()
        shown = ("id", "state", "reason", "exit_code", "attempts", "app", "params", "run_number")
        return {
            **{k: job[k] for k in shown},
            "outputs": sorted((o["path"], o["size"], o["sha256"]) for o in outputs),
        }

    def log(self, job_id: str) -> str:
        r = self.http.get(f"/api/v1/jobs/{job_id}/logs")
        assert r.status_code == 200, r.text
        return r.text

    def job_ids(self) -> set[str]:
        r = self.http.get("/api/v1/jobs", params={"everyone": "true", "limit": 200})
        assert r.status_code == 200, r.text
        return {j["id"] for j in r.json()["items"]}

    def tus_start(self, path: str, length: int) -> str:
        meta = f"path {base64.b64encode(path.encode()).decode()}"
        r = self.http.post(
            "/api/v1/uploads", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta}
        )
        assert r.status_code == 201, r.text
        return urlsplit(r.headers["Location"]).path

    def tus_patch(self, upload: str, offset: int, data: bytes) -> httpx.Response:
        headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
        return self.http.patch(upload, content=data, headers=headers)


@pytest.fixture
def pg_database() -> Iterator[Callable[[bool], str]]:
    """New PostgreSQL databases for one test (``True``: created now; else only named), dropped after it."""
    names: list[str] = []

    def new(create: bool) -> str:
        name = f"labcloud_backup_{os.getpid()}_{secrets.token_hex(3)}"
        names.append(name)
        if create:
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        return f"{PG_BASE}/{name}"

    yield new
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _complete_backups(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file()
    )


# ------------------------------------------------------------------------------------------ a live server


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_backup_taken_while_the_server_works_restores_every_account_file_and_job(
    db: str, tmp_path: Path, pg_database: Callable[[bool], str]
) -> None:
    home_a, home_b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "backup"
    url_a = url_b = None
    if db == "postgresql":
        url_a, url_b = pg_database(True), pg_database(False)  # the restore creates the second
        migrate.upgrade(Settings(home=home_a, database_url=url_a))
    write_digest_app(home_a / "apps")
    env_a = server_env(home_a, ADMIN, url_a, local_cpus="2", scheduler_interval_s="0.2")
    with_secrets = db == "postgresql"  # the SQLite run leaves the signing key out
    try:
        with serve(env_a, tmp_path / "a.log") as url:
            admin = Api(url, *ADMIN)
            r = admin.http.post(
                "/api/v1/users",
                json={"email": USER[0], "password": USER[1], "name": "U", "must_change_password": False},
            )
            assert r.status_code == 201, r.text
            user = Api(url, *USER)
            users_before = sorted(
                (u["id"], u["email"]) for u in admin.http.get("/api/v1/users").json()["items"]
            )
            api_token = user.http.post("/api/v1/me/tokens", json={"name": "script"}).json()["token"]
            login_token = user.http.headers["Authorization"]

            first_a = b"alpha\n" * 1000
            content = {
                (user, "in/a.txt"): first_a,
                (user, "in/deep/er/b.bin"): os.urandom(200_000),
                (user, "notes.md"): "Grüße, ünïcode\n".encode(),
                (user, "empty.txt"): b"",
                (admin, "mine/x.csv"): b"1,2,3\n",
            }
            for (who, path), data in content.items():
                who.put(path, data)
            half = user.tus_start("big/half.bin", 300_000)  # an upload left half done
            assert user.tus_patch(half, 0, os.urandom(120_000)).status_code == 204

            finished = [
                (user, user.submit("one", "in/a.txt")),
                (user, user.submit("two", "in/deep/er/b.bin", code=3)),  # fails: app_error
                (admin, admin.submit("three", "mine/x.csv")),
            ]
            owners = {job_id: "admin" if who is admin else "user" for who, job_id in finished}
            for who, job_id in finished:
                who.wait_end(job_id)
            long_job = user.submit("long", "in/a.txt", seconds=6)
            eventually(lambda: user.job(long_job)["state"] == "running", 60, "the long job to run")
            jobs_before = {job_id: who.summary(job_id) for who, job_id in finished}
            logs_before = {job_id: who.log(job_id) for who, job_id in finished}
            assert jobs_before[finished[1][1]]["state"] == "failed"
            trees_before = {"user": user.tree(), "admin": admin.tree()}

            # the backup, while the long job runs and files and jobs keep coming
            args = ["backup", str(dest), *(["--with-secrets"] if with_secrets else [])]
            proc = subprocess.Popen(
                [*LABCLOUD, *args],
                env={**clean_env(), **env_a},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            during: dict[str, set[str]] = {}  # path → the contents it may hold in the backup
            during_jobs = []
            for i in range(3):
                data = os.urandom(50_000)
                user.put(f"during/{i}.bin", data)
                during[f"during/{i}.bin"] = {sha256(data)}
                replaced = f"replaced-{i}".encode()  # the old object is deleted as the new one lands
                user.put("in/a.txt", replaced)
                during.setdefault("in/a.txt", {sha256(first_a)}).add(sha256(replaced))
                during_jobs.append(user.submit(f"during-{i}", f"during/{i}.bin"))
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert out.strip() == str(dest)
            for job_id in [long_job, *during_jobs]:
                user.wait_end(job_id)  # no job of this server is left running when its home goes

            # a restore never goes into a home in use
            refused = labcloud(env_a, "restore", str(dest))
            assert refused.returncode == 1 and "is not empty" in refused.stderr, refused.stderr
    finally:
        kill_processes_under(home_a)

    # the backup: what its manifest says it holds, and nothing of the half upload
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == "labcloud-backup" and manifest["database"]["kind"] == db
    assert manifest["alembic_revision"] == migrate.head_revision(Settings(home=home_a))
    assert manifest["labcloud_version"] and manifest["with_secrets"] is with_secrets
    assert manifest["counts"]["uploads_in_progress"] == 1 and manifest["missing_objects"] == []
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}
    for rel, entry in manifest["files"].items():
        assert sha256((dest / rel).read_bytes()) == entry["sha256"], rel
    assert not any(rel.startswith("uploads") for rel in on_disk)
    assert (f"logs/{finished[0][1]}/job.log" in on_disk) and "apps/digest.yaml" in on_disk
    assert ("secrets/secret_key" in on_disk) is with_secrets
    settings_doc = json.loads((dest / "settings" / "settings.json").read_text())
    assert settings_doc["initial_admin_password"] == (ADMIN[1] if with_secrets else REDACTED)

    # wipe everything, then restore into a new home (and, on PostgreSQL, a database the restore creates)
    shutil.rmtree(home_a)
    if url_a is not None:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{url_a.rsplit("/", 1)[1]}" WITH (FORCE)')
    scheduled = tmp_path / "scheduled"
    env_b = server_env(home_b, ADMIN, url_b, local_cpus="2", scheduler_interval_s="0.2")
    without_home = {k: v for k, v in env_b.items() if k != "LABCLOUD_HOME"}
    restored = labcloud(without_home, "restore", str(dest), "--home", str(home_b))
    assert restored.returncode == 0, restored.stderr
    assert "1 upload(s) in progress at backup time dropped" in restored.stderr

    extra = {}
    if db == "sqlite":  # the restored server also backs itself up on schedule: every 2 s, one kept
        extra = {"backup_dest": str(scheduled), "backup_every_h": str(2 / 3600), "backup_keep_daily": "1"}
        extra["backup_keep_weekly"] = "0"
    try:
        with serve(server_env(home_b, ADMIN, url_b, local_cpus="2", **extra), tmp_path / "b.log") as url:
            admin, user = Api(url, *ADMIN), Api(url, *USER)  # the same passwords
            assert sorted((u["id"], u["email"]) for u in admin.http.get("/api/v1/users").json()["items"]) == (
                users_before
            )
            assert (
                httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {api_token}"}).status_code
                == 200
            )
            old_login = httpx.get(f"{url}/api/v1/me", headers={"Authorization": login_token}).status_code
            assert old_login == (200 if with_secrets else 401)  # signed with the backed-up key, or a new one

            # every file as it was, its bytes read back through the API
            trees = {"user": user.tree(), "admin": admin.tree()}
            for who, before in trees_before.items():
                for path, (size, digest) in before.items():
                    if path in during:
                        assert trees[who][path][1] in during[path], path
                    else:
                        assert trees[who][path] == (size, digest), path
            for who, api in (("user", user), ("admin", admin)):
                for path, (size, digest) in trees[who].items():
                    data = api.download(path)
                    assert (len(data), sha256(data)) == (size, digest), path
            for path, digests in during.items():  # work done during the backup: in it or not, never torn
                if path in trees["user"]:
                    assert trees["user"][path][1] in digests
            assert "big/half.bin" not in trees["user"]
            assert user.http.get("/api/v1/files/big/half.bin").status_code == 404
            assert user.http.head(half, headers=TUS).status_code == 404  # a resumed upload starts again
            assert user.tus_patch(half, 120_000, b"more").status_code == 404

            # every job as it was; the one running at backup time and those started during it run to the end
            for job_id, summary in jobs_before.items():
                who = admin if owners[job_id] == "admin" else user
                assert who.summary(job_id) == summary
                assert who.log(job_id) == logs_before[job_id]
            assert set(jobs_before) | {long_job} <= admin.job_ids()
            end = user.wait_end(long_job)
            assert end["state"] == "succeeded", end
            result = user.http.get(f"/api/v1/jobs/{long_job}/outputs/result.txt").text
            assert result == f"long {sha256(first_a)}"  # the content it read at submit, not the later one
            for job_id in during_jobs:
                if job_id in admin.job_ids():
                    assert user.wait_end(job_id)["state"] == "succeeded"

            if extra:  # the leader backs up on schedule, and keeps one backup a day
                seen: set[str] = set()

                def two_made() -> bool:
                    seen.update(_complete_backups(scheduled))
                    return len(seen) >= 2

                eventually(two_made, 120, "two scheduled backups")
        if extra:
            kept = _complete_backups(scheduled)
            assert len(kept) == 1  # the older ones were pruned
            made = json.loads((scheduled / kept[0] / "manifest.json").read_text())
            assert made["counts"]["users"] == len(users_before)
    finally:
        kill_processes_under(home_b)


# ------------------------------------------------------------------------------------------ S3


def _settings(home: Path, **more: Any) -> Settings:
    """An installation run in this process (a TestClient's app), with the admin ADMIN."""
    return Settings(
        home=home,
        initial_admin_email=ADMIN[0],
        initial_admin_password=ADMIN[1],
        container_engine="none",
        secret_key="backup-test-" + secrets.token_hex(16),
        **more,
    )


def _s3_settings(home: Path, seaweedfs: SeaweedFS, storage_url: str) -> Settings:
    return _settings(
        home,
        storage_url=storage_url,
        s3_endpoint_url=seaweedfs.endpoint_url,
        s3_region=seaweedfs.region,
        s3_access_key_id=seaweedfs.access_key,
        s3_secret_access_key=seaweedfs.secret_key,
    )


def _files_of(settings: Settings) -> dict[str, bytes]:
    """Every file of the admin's space, read through the API of an app on ``settings``."""
    with TestClient(create_app(settings)) as client:
        token = client.post("/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        items = client.get("/api/v1/files", params={"prefix": "data"}, headers=headers).json()["items"]
        found = {}
        for item in items:
            r = client.get(f"/api/v1/files/{item['path']}", headers=headers, follow_redirects=False)
            if r.status_code == 307:
                r = httpx.get(r.headers["location"])
            assert r.status_code == 200
            assert sha256(r.content) == item["sha256"]
            found[item["path"]] = r.content
        return found


def test_on_s3_objects_are_copied_into_a_backup_or_listed_and_checked_on_restore(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    a = _s3_settings(tmp_path / "a", seaweedfs, f"s3://{s3_bucket}/store")
    content = {"data/one.bin": os.urandom(70_000), "data/two.txt": b"two"}
    with TestClient(create_app(a)) as client:
        token = client.post("/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        for path, data in content.items():
            assert client.put(f"/api/v1/files/{path}", content=data, headers=headers).status_code == 201

    # copied, into a dated series on S3: the second backup of the day replaces the first
    series = f"s3://{s3_bucket}/backups"
    first = backup.create(a, series, backup.Options(copy_objects=True, keep_daily=1))
    second = backup.create(a, series, backup.Options(copy_objects=True, keep_daily=1))
    assert first.manifest["storage"]["objects"] == "copied" and first.manifest["storage"]["count"] == 2
    assert second.pruned == [first.place.rsplit("/", 1)[1]]
    names = seaweedfs.client().list_objects_v2(Bucket=s3_bucket, Prefix="backups/")["Contents"]
    assert {n["Key"].split("/")[1] for n in names} == {second.place.rsplit("/", 1)[1]}
    b = _s3_settings(tmp_path / "b", seaweedfs, f"s3://{s3_bucket}/elsewhere")  # another prefix
    done = backup_restore.restore(b, second.place)
    assert done.objects == 2
    assert _files_of(b) == content

    # listed: the objects stay in the store; a restore checks they are there
    listed = backup.create(a, str(tmp_path / "listed"), backup.Options())
    assert listed.manifest["storage"]["objects"] == "listed" and listed.manifest["storage"]["count"] == 2
    assert not any(rel.startswith("objects/") for rel in listed.manifest["files"])
    inventory = json.loads((tmp_path / "listed" / "objects.json").read_text())
    assert sorted(v["sha256"] for v in inventory.values()) == sorted(sha256(d) for d in content.values())
    c = _s3_settings(tmp_path / "c", seaweedfs, f"s3://{s3_bucket}/store")
    with pytest.raises(BackupError, match="lists its objects in"):  # not where the objects are
        backup_restore.restore(
            _s3_settings(tmp_path / "c2", seaweedfs, f"s3://{s3_bucket}/elsewhere"), str(tmp_path / "listed")
        )
    lost = next(iter(inventory))
    seaweedfs.client().delete_object(Bucket=s3_bucket, Key=f"store/{lost}")
    with pytest.raises(BackupError, match=r"1 stored object.* not in the store"):
        backup_restore.restore(c, str(tmp_path / "listed"))
    assert not (tmp_path / "c" / "labcloud.sqlite3").exists()  # refused before anything was written
    done = backup_restore.restore(c, str(tmp_path / "listed"), allow_missing_objects=True)
    assert done.missing_objects == [lost] and done.objects == 0


# ------------------------------------------------------------------------------------------ no server


def test_retention_keeps_the_newest_backup_of_the_newest_days_and_weeks(tmp_path: Path) -> None:
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    stamps = [
        at("2025-03-10T10:00"),  # Monday, ISO week 11
        at("2025-03-10T04:00"),
        at("2025-03-09T04:00"),  # Sunday, week 10
        at("2025-03-08T04:00"),
        at("2025-03-03T04:00"),  # Monday, week 10
        at("2025-03-02T04:00"),  # Sunday, week 9
        at("2025-02-20T04:00"),  # week 8
        at("2025-01-01T04:00"),  # week 1
    ]
    assert to_keep(stamps, 2, 0) == {at("2025-03-10T10:00"), at("2025-03-09T04:00")}
    assert to_keep(stamps, 0, 3) == {at("2025-03-10T10:00"), at("2025-03-09T04:00"), at("2025-03-02T04:00")}
    assert to_keep(stamps, 1, 1) == {at("2025-03-10T10:00")}
    assert to_keep(stamps, 0, 0) == {at("2025-03-10T10:00")}  # the newest always stays
    assert to_keep(stamps, 30, 30) == set(stamps) - {at("2025-03-10T04:00")}

    # a folder of dated backups: a new one is made there, then the rule prunes the old ones
    dest = tmp_path / "series"
    for stamp in stamps:
        folder = dest / stamp.strftime(STAMP_FORMAT)
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
    now = datetime.now(UTC)
    stale = dest / f".{(now - timedelta(days=3)).strftime(STAMP_FORMAT)}.partial"  # abandoned by a crash
    young = dest / f".{(now - timedelta(minutes=5)).strftime(STAMP_FORMAT)}.partial"  # being made
    for folder in (stale, young, dest / "notes"):
        folder.mkdir()
    settings = _settings(tmp_path / "home")
    migrate.upgrade(settings)
    made = backup.create(settings, str(dest), backup.Options(keep_daily=3, keep_weekly=4))
    new = Path(made.place).name
    assert Path(made.place).parent == dest and (dest / new / "manifest.json").is_file()
    # kept: the new one (today, this week), then 03-10 10:00 and 03-09 by day, 03-02 by week
    assert _complete_backups(dest) == sorted(
        [new, "2025-03-10T10-00-00Z", "2025-03-09T04-00-00Z", "2025-03-02T04-00-00Z"]
    )
    assert sorted(made.pruned) == sorted(
        [s.strftime(STAMP_FORMAT) for s in stamps if s.strftime(STAMP_FORMAT) not in _complete_backups(dest)]
        + [stale.name]
    )
    assert young.is_dir() and (dest / "notes").is_dir()
    assert prune(parse_place(str(dest)), settings, 3, 4, now) == []  # the rule holds: nothing more goes

    with pytest.raises(BackupError, match="subfolders"):
        backup.create(settings, str(tmp_path / "x.tar.gz"), backup.Options(keep_daily=1))


def test_an_older_schema_is_migrated_forward_and_a_damaged_backup_refused(tmp_path: Path) -> None:
    old = _settings(tmp_path / "old")
    migrate.upgrade(old, "0021")
    archive = tmp_path / "old.tar.gz"
    made = backup.create(old, str(archive), backup.Options())
    assert made.manifest["alembic_revision"] == "0021" and archive.is_file()

    # a backup folder with one flipped byte is refused, naming the file
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(archive, unpacked)
    database = unpacked / "database" / "labcloud.sqlite3"
    raw = bytearray(database.read_bytes())
    raw[-1] ^= 1
    database.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match=r"database/labcloud\.sqlite3 .* is damaged"):
        backup_restore.restore(_settings(tmp_path / "damaged"), str(unpacked))

    new = _settings(tmp_path / "new")
    done = backup_restore.restore(new, str(archive))
    assert done.uploads_dropped == 0
    engine = create_engine(new.effective_database_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision(new) != "0021"
    finally:
        engine.dispose()


def test_a_file_deleted_before_its_object_is_copied_makes_the_backup_read_the_database_again(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path / "a")
    said: list[str] = []
    with TestClient(create_app(settings)) as client:
        token = client.post("/api/v1/auth/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        for name in ("data/doomed.txt", "data/kept.txt"):
            assert (
                client.put(f"/api/v1/files/{name}", content=name.encode(), headers=headers).status_code == 201
            )
        deleted: list[int] = []

        def delete_once() -> bool:
            """Asked before each object is copied (whether to stop): the first time, a user deletes a file
            whose object the first database snapshot names, and its object goes at once."""
            if not deleted:
                deleted.append(client.delete("/api/v1/files/data/doomed.txt", headers=headers).status_code)
            return False

        made = backup.create(
            settings, str(tmp_path / "b"), backup.Options(), say=said.append, stopping=delete_once
        )
    assert deleted == [204]
    assert any("deleted during the backup" in line for line in said), said
    assert made.manifest["missing_objects"] == [] and made.manifest["storage"]["count"] == 1
    assert made.manifest["counts"]["files"] == 2  # the folder and the file left: as the second snapshot saw
    restored = _settings(tmp_path / "c")
    backup_restore.restore(restored, str(tmp_path / "b"))
    assert _files_of(restored) == {"data/kept.txt": b"data/kept.txt"}

    # an object lost from the store before a backup: named in its manifest, and a restore asks first
    [kept] = [rel.removeprefix("objects/") for rel in made.manifest["files"] if rel.startswith("objects/")]
    (settings.files_dir / kept).unlink()
    said.clear()
    lossy = backup.create(settings, str(tmp_path / "lossy"), backup.Options(), say=said.append)
    assert lossy.manifest["missing_objects"] == [kept] and lossy.manifest["storage"]["count"] == 0
    assert any(line.startswith("warning: 1 object(s)") for line in said), said
    with pytest.raises(BackupError, match=r"1 stored object.* not in the backup"):
        backup_restore.restore(_settings(tmp_path / "d"), str(tmp_path / "lossy"))
    done = backup_restore.restore(
        _settings(tmp_path / "d"), str(tmp_path / "lossy"), allow_missing_objects=True
    )
    assert done.missing_objects == [kept]


def test_settings_are_backed_up_without_their_secrets_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = """# this lab's labcloud
secret_key = "signing-key-0123456789abcdef0123456789"
initial_admin_password = "first-admin-password"
smtp_url = "smtp://mailer:mail-password@mail.example.org:587"
s3_secret_access_key = "s3-secret-key"
slurm_rest_token = "slurm-jwt"
port = 8123
"""
    (home / "labcloud.toml").write_text(config)
    monkeypatch.setenv("LABCLOUD_HOME", str(home))  # the settings are read as the server reads them
    settings = Settings()
    migrate.upgrade(settings)
    hidden = ["signing-key-0123", "first-admin-password", "mail-password", "s3-secret-key", "slurm-jwt"]

    plain = backup.create(settings, str(tmp_path / "plain"), backup.Options())
    everything = b"".join(p.read_bytes() for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert [h for h in hidden if h.encode() in everything] == []
    kept = (tmp_path / "plain" / "settings" / "labcloud.toml").read_text()
    assert kept.startswith("# this lab's labcloud") and "port = 8123" in kept
    assert "smtp://mailer:REDACTED@mail.example.org:587" in kept
    effective = json.loads((tmp_path / "plain" / "settings" / "settings.json").read_text())
    assert effective["port"] == 8123 and effective["secret_key"] == REDACTED
    assert plain.manifest["settings"]["secret_key"] is None and plain.manifest["with_secrets"] is False

    backup.create(settings, str(tmp_path / "full"), backup.Options(with_secrets=True))
    assert (tmp_path / "full" / "settings" / "labcloud.toml").read_text() == config
    effective = json.loads((tmp_path / "full" / "settings" / "settings.json").read_text())
    assert effective["smtp_url"] == "smtp://mailer:mail-password@mail.example.org:587"
