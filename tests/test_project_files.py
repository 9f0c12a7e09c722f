"""A project's files: its space under ``projects/<slug>/``, where roles decide who reads and who writes
and to whom is no member nothing of it exists; its jobs read inputs from it and leave their outputs in
it; its own storage limit; and the migration that moves every user's files into their personal
project without touching an object of the store."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import py, wait_for_end, write_app
from labcloud.db import migrate
from labcloud.db.types import UTCDateTime, utcnow
from labcloud.settings import Settings
from labcloud.storage.local import LocalStorage
from test_web import browser_login, csrf_of
from test_worker_api import claim, register

TUS = {"Tus-Resumable": "1.0.0"}


def project(client: TestClient, who: Account, slug: str) -> None:
    r = client.post("/api/v1/projects", json={"name": slug.title(), "slug": slug}, headers=who.headers)
    assert r.status_code == 201, r.text


def add(client: TestClient, who: Account, slug: str, email: str, role: str) -> None:
    r = client.post(
        f"/api/v1/projects/{slug}/members", json={"email": email, "role": role}, headers=who.headers
    )
    assert r.status_code == 200, r.text


def put(client: TestClient, who: Account, path: str, data: bytes) -> httpx.Response:
    return client.put(f"/api/v1/files/{path}", content=data, headers=who.headers)


def get(client: TestClient, who: Account, path: str) -> httpx.Response:
    r = client.get(f"/api/v1/files/{path}", headers=who.headers, follow_redirects=False)
    if r.status_code == 307:
        return httpx.get(r.headers["location"], timeout=30)
    return r


def listing(client: TestClient, who: Account, prefix: str) -> httpx.Response:
    return client.get("/api/v1/files", params={"prefix": prefix}, headers=who.headers)


def paths(client: TestClient, who: Account, prefix: str) -> list[str]:
    r = listing(client, who, prefix)
    assert r.status_code == 200, r.text
    return [e["path"] for e in r.json()["items"]]


def move(client: TestClient, who: Account, src: str, dst: str) -> httpx.Response:
    return client.post("/api/v1/files:move", json={"from": src, "to": dst}, headers=who.headers)


def tus_create(client: TestClient, who: Account, path: str, length: int) -> httpx.Response:
    meta = "path " + base64.b64encode(path.encode()).decode()
    headers = {**who.headers, **TUS, "Upload-Length": str(length), "Upload-Metadata": meta}
    return client.post("/api/v1/uploads", headers=headers)


def every_route(client: TestClient, who: Account, file: str, folder: str) -> dict[str, int]:
    """The status of each file route on a project's file and folder."""
    return {
        "list": listing(client, who, folder).status_code,
        "list top": listing(client, who, folder.rsplit("/", 1)[0]).status_code,
        "download": get(client, who, file).status_code,
        "zip": get(client, who, folder).status_code,
        "upload": put(client, who, f"{folder}/new.txt", b"x").status_code,
        "move": move(client, who, file, f"{folder}/moved.txt").status_code,
        "delete": client.delete(f"/api/v1/files/{file}", headers=who.headers).status_code,
        "tus create": tus_create(client, who, f"{folder}/tus.bin", 3).status_code,
    }


def test_roles_decide_who_reads_and_writes_a_projects_files_and_outsiders_see_none(
    client: TestClient, make_user: Any
) -> None:
    owner, viewer, member, outsider = (make_user() for _ in range(4))
    project(client, owner, "vision")
    add(client, owner, "vision", viewer.email, "viewer")
    add(client, owner, "vision", member.email, "member")
    r = put(client, owner, "projects/vision/data/a.txt", b"alpha")
    assert r.status_code == 201 and r.json()["path"] == "projects/vision/data/a.txt"
    file, folder = "projects/vision/data/a.txt", "projects/vision/data"

    # to an outsider nothing of the project exists, nor does a project that does not
    assert set(every_route(client, outsider, file, folder).values()) == {404}
    assert set(every_route(client, outsider, "projects/nope/a.txt", "projects/nope/data").values()) == {404}
    assert paths(client, outsider, "") == [] and paths(client, outsider, "projects") == []

    # a viewer reads everything and changes nothing
    assert get(client, viewer, file).content == b"alpha"
    archive = zipfile.ZipFile(io.BytesIO(get(client, viewer, folder).content))
    assert archive.namelist() == ["data/a.txt"]
    writes = every_route(client, viewer, file, folder)
    assert {k: writes[k] for k in ("upload", "move", "delete", "tus create")} == dict.fromkeys(
        ("upload", "move", "delete", "tus create"), 403
    )
    assert get(client, viewer, file).content == b"alpha"

    # members see the project among their files, and write in it
    assert "projects" in paths(client, member, "")
    assert paths(client, member, "projects") == ["projects/vision"]
    assert paths(client, member, "projects/vision") == ["projects/vision/data"]
    assert put(client, member, "projects/vision/data/b.txt", b"beta").status_code == 201
    moved = move(client, member, "projects/vision/data/b.txt", "projects/vision/data/c.txt")
    assert moved.status_code == 200 and moved.json()["path"] == "projects/vision/data/c.txt"
    assert get(client, owner, "projects/vision/data/c.txt").content == b"beta"
    assert tus_create(client, member, "projects/vision/data/d.bin", 3).status_code == 201
    # moves stay in one space
    assert move(client, member, "projects/vision/data/c.txt", "mine.txt").status_code == 422
    assert (
        client.delete("/api/v1/files/projects/vision/data/c.txt", headers=member.headers).status_code == 204
    )
    assert paths(client, owner, folder) == [file]

    # personal spaces stay private: the project's files are not in anyone's own space
    assert put(client, member, "data/own.txt", b"own").status_code == 201
    assert paths(client, owner, "") == ["projects"]
    assert get(client, owner, "data/own.txt").status_code == 404


def test_a_members_job_reads_the_projects_files_and_leaves_its_outputs_there(
    client: TestClient, settings: Settings, make_user: Any
) -> None:
    owner, member, outsider = (make_user() for _ in range(3))
    project(client, owner, "vision")
    add(client, owner, "vision", member.email, "member")
    assert put(client, owner, "projects/vision/in/a.txt", b"shared input").status_code == 201
    write_app(
        settings.effective_apps_dir,
        "upper",
        [
            *py("""
        import pathlib, sys
        text = pathlib.Path(sys.argv[1]).read_text()
        (pathlib.Path(sys.argv[2]) / "out.txt").write_text(text.upper())
        """),
            "{inputs.data}",
            "{output}",
        ],
        inputs={"data": {"description": "a file", "type": "file"}},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    body = {"app": "upper", "project": "vision", "inputs": {"data": "projects/vision/in/a.txt"}}

    refused = client.post("/api/v1/jobs", json={**body, "project": None}, headers=outsider.headers)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "inputs", "data"]

    r = client.post("/api/v1/jobs", json=body, headers=member.headers)
    assert r.status_code == 201, r.text
    job = r.json()
    done = wait_for_end(client, job["id"], member.headers)
    assert done["state"] == "succeeded", done
    folder = f"projects/vision/jobs/{job['id']}"
    assert paths(client, owner, folder) == [f"{folder}/out.txt"]  # another member sees them
    assert get(client, owner, f"{folder}/out.txt").content == b"SHARED INPUT"
    outputs = client.get(f"/api/v1/jobs/{job['id']}/outputs", headers=owner.headers)
    assert outputs.status_code == 200 and [o["path"] for o in outputs.json()] == ["out.txt"]
    one = client.get(
        f"/api/v1/jobs/{job['id']}/outputs/out.txt", headers=owner.headers, follow_redirects=False
    )
    assert one.status_code in (200, 307)
    assert paths(client, member, "") == ["projects"]  # nothing landed in the member's own space
    assert get(client, outsider, f"{folder}/out.txt").status_code == 404

    # a personal job of the member may read the project's file too; its outputs stay the member's
    r = client.post("/api/v1/jobs", json={**body, "project": None}, headers=member.headers)
    assert r.status_code == 201, r.text
    mine = r.json()
    assert wait_for_end(client, mine["id"], member.headers)["state"] == "succeeded"
    assert get(client, member, f"jobs/{mine['id']}/out.txt").content == b"SHARED INPUT"
    assert get(client, owner, f"projects/vision/jobs/{mine['id']}/out.txt").status_code == 404


def test_a_project_has_its_own_storage_limit_and_use(
    client: TestClient, settings: Settings, admin: Account, make_user: Any
) -> None:
    owner = make_user()
    project(client, owner, "vision")
    settings.project_storage_bytes = 1000
    settings.storage_quota_bytes = 0
    assert put(client, owner, "projects/vision/a.bin", b"a" * 600).status_code == 201
    over = put(client, owner, "projects/vision/b.bin", b"b" * 600)
    assert over.status_code == 413 and "400 bytes are left" in over.json()["detail"]
    assert tus_create(client, owner, "projects/vision/c.bin", 600).status_code == 413
    # the user's own space is counted apart, and the project's folder says what the project uses
    assert put(client, owner, "b.bin", b"b" * 600).status_code == 201
    assert client.get("/api/v1/me/storage", headers=owner.headers).json()["used_bytes"] == 600
    top = {e["path"]: e["size"] for e in listing(client, owner, "projects").json()["items"]}
    assert top == {"projects/vision": 600}
    # replacing a file counts the old one as free; deleting gives the room back
    assert put(client, owner, "projects/vision/a.bin", b"a" * 1000).status_code == 201
    assert client.delete("/api/v1/files/projects/vision/a.bin", headers=owner.headers).status_code == 204
    top = {e["path"]: e["size"] for e in listing(client, owner, "projects").json()["items"]}
    assert top == {"projects/vision": 0}
    # a limit an admin sets for the project wins over the installation's
    r = client.put("/api/v1/projects/vision/storage", json={"limit_bytes": 2000}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"used_bytes": 0, "limit_bytes": 2000, "available_bytes": 2000}
    assert put(client, owner, "projects/vision/a.bin", b"a" * 1500).status_code == 201
    refused = client.put("/api/v1/projects/vision/storage", json={"limit_bytes": 1}, headers=owner.headers)
    assert refused.status_code == 403


# --------------------------------------------------------------------------------------------- migration


def _table(name: str, *columns: str) -> sa.TableClause:
    uuids = {"id", "owner_id", "personal_user_id", "project_id"}
    return sa.table(name, *(sa.column(c, sa.Uuid() if c in uuids else None) for c in columns))


def test_the_migration_moves_every_file_into_its_owners_personal_project(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=empty_database)
    store = LocalStorage(tmp_path / "blobs")
    migrate.upgrade(settings, "0009")
    engine = sa.create_engine(empty_database)
    now = utcnow()
    # the tables as they were (the models' have columns added since)
    users = sa.table(
        "users",
        sa.column("id", sa.Uuid()),
        *(sa.column(c) for c in ("email", "name", "password_hash", "token_version", "storage_used_bytes")),
        *(sa.column(c, sa.Boolean()) for c in ("is_admin", "is_active")),
        *(sa.column(c, UTCDateTime()) for c in ("created_at", "updated_at")),
    )
    files = sa.table(
        "files",
        *(sa.column(c, sa.Uuid()) for c in ("id", "owner_id")),
        *(sa.column(c) for c in ("path", "parent", "name", "kind", "size", "sha256", "blob_key")),
        *(sa.column(c, UTCDateTime()) for c in ("created_at", "modified_at")),
    )
    people = [uuid.uuid4() for _ in range(3)]
    made: dict[tuple[uuid.UUID, str], tuple[str | None, str | None, int]] = {}

    def add_user(conn: sa.Connection, person: uuid.UUID, n: int, used: int) -> None:
        conn.execute(
            users.insert().values(
                id=person,
                email=f"p{n}@example.org",
                name="",
                password_hash="x",
                is_admin=False,
                is_active=True,
                token_version=0,
                created_at=now,
                updated_at=now,
                storage_used_bytes=used,
            )
        )

    def add_files(conn: sa.Connection, person: uuid.UUID, n: int) -> int:
        used = 0
        for folder in ("runs", "runs/day 1"):
            parent, _, name = folder.rpartition("/")
            conn.execute(files.insert().values(
                id=uuid.uuid4(), owner_id=person, path=folder, parent=parent, name=name, kind="folder",
                size=0, sha256=None, blob_key=None, created_at=now, modified_at=now,
            ))  # fmt: skip
            made[(person, folder)] = (None, None, 0)
        for i in range(n + 1):
            data = os.urandom(100 + i)
            with tempfile.NamedTemporaryFile(delete=False, dir=tmp_path) as fh:
                fh.write(data)
            key = store.new_key()
            store.put_file(key, Path(fh.name))
            path = f"runs/day 1/t{i}.bin" if i % 2 else f"runs/same name {i}.bin"  # same paths, other users
            parent, _, name = path.rpartition("/")
            digest = hashlib.sha256(data).hexdigest()
            conn.execute(files.insert().values(
                id=uuid.uuid4(), owner_id=person, path=path, parent=parent, name=name, kind="file",
                size=len(data), sha256=digest, blob_key=key, created_at=now, modified_at=now,
            ))  # fmt: skip
            made[(person, path)] = (key, digest, len(data))
            used += len(data)
        return used

    used: dict[uuid.UUID, int] = {}
    with engine.begin() as conn:  # two users before projects came (0010 makes their personal projects)
        for n, person in enumerate(people[:2]):
            add_user(conn, person, n, 0)
    migrate.upgrade(settings, "0014")
    with engine.begin() as conn:  # one after, without a personal project yet
        add_user(conn, people[2], 2, 0)
        for n, person in enumerate(people):
            used[person] = add_files(conn, person, n)
            conn.execute(users.update().where(users.c.id == person).values(storage_used_bytes=used[person]))
    engine.dispose()

    migrate.upgrade(settings)
    engine = sa.create_engine(empty_database)
    projects = _table("projects", "id", "personal_user_id", "storage_used_bytes")
    after = _table("files", "project_id", "owner_id", "path", "kind", "size", "sha256", "blob_key")
    with engine.connect() as conn:
        personal = {row.personal_user_id: row for row in conn.execute(sa.select(projects))}
        assert set(personal) == set(people)
        found = {(row.owner_id, row.path): row for row in conn.execute(sa.select(after))}
        assert set(found) == set(made)
        for (person, path), (key, digest, size) in made.items():
            row = found[(person, path)]
            assert row.project_id == personal[person].id
            assert (row.blob_key, row.sha256, int(row.size)) == (key, digest, size)
            if key is not None:  # the object is where it was, with the same bytes
                assert hashlib.sha256(b"".join(store.iter_bytes(key))).hexdigest() == digest
        assert {p: int(personal[p].storage_used_bytes) for p in people} == used
    engine.dispose()
    # and down again, to where it was
    from alembic import command

    command.downgrade(migrate.alembic_config(settings), "0014")
    engine = sa.create_engine(empty_database)
    assert "project_id" not in {c["name"] for c in sa.inspect(engine).get_columns("files")}
    with engine.connect() as conn:
        back = {
            (r.owner_id, r.path): r.blob_key
            for r in conn.execute(sa.select(files.c.owner_id, files.c.path, files.c.blob_key))
        }
    assert back == {k: v[0] for k, v in made.items()}
    engine.dispose()


def test_the_file_pages_show_a_projects_files_to_its_members_only(
    client: TestClient, app: Any, make_user: Any
) -> None:
    owner, viewer, outsider = (make_user() for _ in range(3))
    project(client, owner, "vision")
    add(client, owner, "vision", viewer.email, "viewer")
    assert put(client, owner, "projects/vision/data/a.txt", b"alpha").status_code == 201
    page = browser_login(app, viewer.email, viewer.password)
    top = page.get("/files")
    assert top.status_code == 200 and 'href="/files?path=projects"' in top.text
    assert 'href="/files?path=projects/vision"' in page.get("/files?path=projects").text
    inner = page.get("/files?path=projects/vision/data")
    assert inner.status_code == 200 and 'data-path="projects/vision/data/a.txt"' in inner.text
    assert page.get("/files/download/projects/vision/data/a.txt").content == b"alpha"
    refused = page.post(
        "/files/delete",
        data={"path": "projects/vision/data/a.txt", "csrf_token": csrf_of(inner.text)},
        follow_redirects=False,
    )
    assert refused.status_code == 403
    assert get(client, owner, "projects/vision/data/a.txt").content == b"alpha"

    stranger = browser_login(app, outsider.email, outsider.password)
    assert stranger.get("/files?path=projects/vision/data").status_code == 404
    assert stranger.get("/files/download/projects/vision/data/a.txt").status_code == 404
    assert 'href="/files?path=projects"' not in stranger.get("/files").text


def test_a_job_reads_its_project_inputs_with_its_submitters_access_when_it_starts(
    pclient: TestClient, settings: Settings, admin: Account, make_user: Any
) -> None:
    owner, member = make_user(), make_user()
    project(pclient, owner, "vision")
    add(pclient, owner, "vision", member.email, "member")
    assert put(pclient, owner, "projects/vision/in/a.txt", b"shared").status_code == 201
    write_app(
        settings.effective_apps_dir,
        "reader",
        ["cat", "{inputs.data}"],
        inputs={"data": {"description": "a file", "type": "file"}},
    )
    pclient.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    body = {"app": "reader", "project": "vision", "inputs": {"data": "projects/vision/in/a.txt"}}
    kept = pclient.post("/api/v1/jobs", json=body, headers=member.headers).json()
    token = register(pclient, admin, "rig")
    got = claim(pclient, token)
    assert got is not None and got["id"] == kept["id"]
    assert [f["path"] for f in got["inputs"]["data"]["files"]] == ["a.txt"]

    dropped = pclient.post("/api/v1/jobs", json=body, headers=member.headers).json()
    r = pclient.delete(f"/api/v1/projects/vision/members/{member.id}", headers=owner.headers)
    assert r.status_code == 204, r.text
    assert claim(pclient, token) is None  # the member left: the input is no longer theirs to read
    job = pclient.get(f"/api/v1/jobs/{dropped['id']}", headers=owner.headers).json()
    assert (job["state"], job["reason"]) == ("failed", "staging_failed"), job
