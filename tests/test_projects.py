"""Projects: members and roles decide who sees and changes a project's jobs; join codes; the rules of
owners and managers; and the migration that puts every existing job into its owner's personal project."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import PG_SERVER, Account, backend
from jobs_helpers import wait_for_end, write_app
from labcloud.db import migrate
from labcloud.db.models import Job, Project, ProjectMember, User
from labcloud.db.types import utcnow
from labcloud.settings import Settings


@pytest.fixture
def apps(settings: Settings) -> None:
    write_app(settings.effective_apps_dir, "quick", ["echo", "done"])
    write_app(settings.effective_apps_dir, "nap", ["sleep", "30"])


def project(client: TestClient, who: Account, name: str, slug: str | None = None) -> dict[str, Any]:
    r = client.post("/api/v1/projects", json={"name": name, "slug": slug}, headers=who.headers)
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


def add(client: TestClient, who: Account, slug: str, email: str, role: str) -> Any:
    return client.post(
        f"/api/v1/projects/{slug}/members", json={"email": email, "role": role}, headers=who.headers
    )


def submit(client: TestClient, who: Account, app: str, project: str | None = None) -> Any:
    body: dict[str, Any] = {"app": app}
    if project is not None:
        body["project"] = project
    return client.post("/api/v1/jobs", json=body, headers=who.headers)


def test_roles_decide_who_sees_runs_and_changes_a_projects_jobs(
    client: TestClient, make_user: Any, apps: None
) -> None:
    owner, manager, member, viewer, outsider = (make_user() for _ in range(5))
    lab = project(client, owner, "Vision Lab", "vision")
    assert lab["role"] == "owner" and not lab["personal"] and [m["role"] for m in lab["members"]] == ["owner"]
    assert add(client, owner, "vision", manager.email, "manager").status_code == 200
    assert add(client, manager, "vision", member.email, "member").status_code == 200
    assert add(client, manager, "vision", viewer.email, "viewer").status_code == 200

    # a member runs a job in the project; everyone in it sees it, nobody else does
    job = submit(client, member, "nap", "vision").json()
    assert job["project"] == "vision", job
    for who in (owner, manager, member, viewer):
        assert client.get(f"/api/v1/jobs/{job['id']}", headers=who.headers).status_code == 200
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=outsider.headers).status_code == 404
    assert client.get(f"/api/v1/jobs/{job['id']}/logs", headers=outsider.headers).status_code == 404
    assert client.get("/api/v1/projects/vision", headers=outsider.headers).status_code == 404
    listed = client.get("/api/v1/jobs", params={"project": "vision"}, headers=viewer.headers).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    assert (
        client.get("/api/v1/jobs", params={"project": "vision"}, headers=outsider.headers).status_code == 404
    )
    assert client.get("/api/v1/jobs", headers=viewer.headers).json()["items"] == []  # default: your own

    # a viewer may not run jobs there, nor cancel another's; an outsider may not submit to it
    refused = submit(client, viewer, "quick", "vision")
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "project"], (
        refused.text
    )
    assert "viewer" in refused.text
    assert submit(client, outsider, "quick", "vision").status_code == 422
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=viewer.headers).status_code == 403
    # a manager cancels anyone's job in the project
    r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=manager.headers)
    assert r.status_code == 200, r.text
    assert wait_for_end(client, job["id"], member.headers)["state"] == "cancelled"

    # without a project, a job goes to the submitter's personal project
    own = submit(client, outsider, "quick").json()
    mine = client.get("/api/v1/projects", headers=outsider.headers).json()
    assert [(p["personal"], p["role"]) for p in mine] == [(True, "owner")]
    assert own["project"] == mine[0]["slug"]
    assert submit(client, outsider, "quick", "personal").json()["project"] == mine[0]["slug"]
    # nobody else is let into a personal project
    r = add(client, outsider, mine[0]["slug"], member.email, "member")
    assert r.status_code == 409, r.text
    assert client.get(f"/api/v1/projects/{mine[0]['slug']}", headers=member.headers).status_code == 404


def test_owners_and_managers_keep_to_their_rules(client: TestClient, make_user: Any) -> None:
    owner, manager, member = (make_user() for _ in range(3))
    project(client, owner, "Rules", "rules")
    add(client, owner, "rules", manager.email, "manager")
    add(client, owner, "rules", member.email, "member")
    ids = {
        m["email"]: m["user_id"]
        for m in client.get("/api/v1/projects/rules", headers=owner.headers).json()["members"]
    }
    # a manager makes no owners and removes no managers; a member changes nothing
    assert add(client, manager, "rules", member.email, "owner").status_code == 403
    r = client.delete(f"/api/v1/projects/rules/members/{ids[owner.email]}", headers=manager.headers)
    assert r.status_code == 403
    r = client.patch(
        f"/api/v1/projects/rules/members/{ids[manager.email]}",
        json={"role": "viewer"},
        headers=member.headers,
    )
    assert r.status_code == 403
    # the last owner stays
    r = client.delete(f"/api/v1/projects/rules/members/{ids[owner.email]}", headers=owner.headers)
    assert r.status_code == 409 and "needs an owner" in r.text
    r = client.patch(
        f"/api/v1/projects/rules/members/{ids[owner.email]}", json={"role": "member"}, headers=owner.headers
    )
    assert r.status_code == 409
    # anyone may leave; then the project is gone for them
    assert (
        client.delete(
            f"/api/v1/projects/rules/members/{ids[member.email]}", headers=member.headers
        ).status_code
        == 204
    )
    assert client.get("/api/v1/projects/rules", headers=member.headers).status_code == 404
    # slugs: every problem at once, and taken ones refused
    r = client.post("/api/v1/projects", json={"name": "", "slug": "Bad Slug!"}, headers=owner.headers)
    assert r.status_code == 422 and {tuple(e["loc"]) for e in r.json()["errors"]} == {
        ("body", "name"),
        ("body", "slug"),
    }
    assert (
        client.post(
            "/api/v1/projects", json={"name": "Again", "slug": "rules"}, headers=owner.headers
        ).status_code
        == 409
    )
    assert project(client, owner, "Mouse Behaviour 2026")["slug"] == "mouse-behaviour-2026"


def test_a_join_code_lets_a_user_in_until_it_is_replaced_or_expires(
    client: TestClient, make_user: Any, settings: Settings
) -> None:
    owner, newcomer, late = make_user(), make_user(), make_user()
    project(client, owner, "Open Lab", "open-lab")
    r = client.post("/api/v1/projects/open-lab/join-code", json={"days": 7}, headers=owner.headers)
    assert r.status_code == 200, r.text
    code = r.json()["code"]
    joined = client.post("/api/v1/projects/join", json={"code": code}, headers=newcomer.headers)
    assert joined.status_code == 200 and joined.json()["role"] == "member", joined.text
    assert joined.json()["join_code_expires_at"] is None  # only managers see it
    # a new code replaces the old one
    fresh = client.post("/api/v1/projects/open-lab/join-code", json={}, headers=owner.headers).json()["code"]
    assert client.post("/api/v1/projects/join", json={"code": code}, headers=late.headers).status_code == 404
    # members hand out no codes
    assert (
        client.post("/api/v1/projects/open-lab/join-code", json={}, headers=newcomer.headers).status_code
        == 403
    )
    # an expired code lets nobody in
    engine = sa.create_engine(settings.effective_database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.update(Project)
            .where(Project.slug == "open-lab")
            .values(join_code_expires_at=utcnow() - timedelta(seconds=1))
        )
    engine.dispose()
    r = client.post("/api/v1/projects/join", json={"code": fresh}, headers=late.headers)
    assert r.status_code == 404 and "expired" in r.text
    assert client.get("/api/v1/projects/open-lab", headers=late.headers).status_code == 404


# --------------------------------------------------------------------------------------------- migration


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


def test_the_migration_puts_every_job_in_its_owners_personal_project(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=empty_database)
    migrate.upgrade(settings, "0009")
    engine = sa.create_engine(empty_database)
    users, jobs = User.__table__, Job.__table__  # (the models' tables: the same columns, typed)
    people = [uuid.uuid4() for _ in range(3)]
    now = utcnow()
    with engine.begin() as conn:
        for i, person in enumerate(people):
            conn.execute(
                users.insert().values(
                    id=person,
                    email=f"p{i}@example.org",
                    name="" if i else "Ada",
                    password_hash="x",
                    is_admin=False,
                    is_active=True,
                    token_version=0,
                    created_at=now,
                    updated_at=now,
                    storage_used_bytes=0,
                )
            )
        made = {}
        for n in range(7):
            job_id, owner = uuid.uuid4(), people[n % 3]
            made[job_id] = owner
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    owner_id=owner,
                    name=f"j{n}",
                    app="a",
                    version="1",
                    entrypoint="e",
                    spec={},
                    spec_hash="0" * 64,
                    params={"n": n},
                    inputs={},
                    env={},
                    resources={},
                    tags={},
                    state="succeeded",
                    message="",
                    attempts=1,
                    max_attempts=3,
                    executor="local",
                    usage={},
                    created_at=now,
                    updated_at=now,
                )
            )
    migrate.upgrade(settings)
    projects, members = Project.__table__, ProjectMember.__table__
    with engine.connect() as conn:
        personal = {row.personal_user_id: row for row in conn.execute(sa.select(projects))}
        assert set(personal) == set(people)
        assert (
            personal[people[0]].name == "Ada (personal)"
            and personal[people[1]].name == "p1@example.org (personal)"
        )
        roles = {(row.project_id, row.user_id): row.role for row in conn.execute(sa.select(members))}
        assert roles == {(personal[p].id, p): "owner" for p in people}
        found = {row.id: row for row in conn.execute(sa.select(jobs))}
        assert set(found) == set(made)
        for job_id, owner in made.items():
            assert found[job_id].project_id == personal[owner].id
            assert found[job_id].params["n"] is not None  # nothing else of the job changed
    engine.dispose()
    # and down again, to where it was
    from alembic import command

    command.downgrade(migrate.alembic_config(settings), "0009")
    engine = sa.create_engine(empty_database)
    assert "projects" not in sa.inspect(engine).get_table_names()
    assert "project_id" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    engine.dispose()
