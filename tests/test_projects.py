"""Projects: members and roles decide who sees and changes a project's jobs; join codes; the rules of
owners and managers; and the migration that puts every existing job into its owner's personal project."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import wait_for_end, write_app
from labcloud.api.app import create_app
from labcloud.db import migrate
from labcloud.db.models import Job, Project, ProjectMember, User
from labcloud.db.types import utcnow
from labcloud.settings import Settings
from live_server import eventually


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
    assert [(j["id"], j["owner"]) for j in listed["items"]] == [(job["id"], member.email)]
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


# added after revision 0009
LATER_COLUMNS = {"notify_email", "project_id", "quota_hold", "notify", "notify_apprise_url"}
LATER_COLUMNS |= {"run_number", "jobs_submitted"}


def _as_of_0009(table: Any) -> sa.TableClause:
    """The model's table with only the columns it had at revision 0009 (typed, without later defaults)."""
    return sa.table(
        table.name, *(sa.column(c.name, c.type) for c in table.columns if c.name not in LATER_COLUMNS)
    )


def test_the_migration_puts_every_job_in_its_owners_personal_project(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=empty_database)
    migrate.upgrade(settings, "0009")
    engine = sa.create_engine(empty_database)
    users, jobs = _as_of_0009(User.__table__), _as_of_0009(Job.__table__)
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
    projects, members, jobs = Project.__table__, ProjectMember.__table__, Job.__table__
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
        # each owner's jobs are numbered 1, 2, ... and the owner's counter goes on from there
        submitted = {row.id: row.jobs_submitted for row in conn.execute(sa.select(User.__table__))}
        for person in people:
            mine = sorted(j.run_number for j in found.values() if j.owner_id == person)
            assert mine == list(range(1, len(mine) + 1)) and submitted[person] == len(mine)
    engine.dispose()
    # and down again, to where it was
    from alembic import command

    command.downgrade(migrate.alembic_config(settings), "0009")
    engine = sa.create_engine(empty_database)
    assert "projects" not in sa.inspect(engine).get_table_names()
    assert "project_id" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    engine.dispose()


# ----------------------------------------------------------------------------------------------- quotas


def set_quota(
    client: TestClient, admin: Account, slug: str, resource: str, **body: Any
) -> list[dict[str, Any]]:
    r = client.put(f"/api/v1/projects/{slug}/quotas/{resource}", json=body, headers=admin.headers)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


def test_a_quota_refuses_what_does_not_fit_and_gives_back_what_ends(
    client: TestClient, admin: Account, make_user: Any, settings: Settings
) -> None:
    write_app(  # (each waits for the test to open its gate: none ends before the quota is checked)
        settings.effective_apps_dir,
        "hour",
        ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"],
        resources={"cpus": 2, "memory_mb": 64, "timeout_s": 3600},
    )
    owner = make_user()
    project(client, owner, "Budget", "budget")
    # a member cannot set quotas; an admin can
    r = client.put("/api/v1/projects/budget/quotas/cpu_hours", json={"limit": 5}, headers=owner.headers)
    assert r.status_code == 403
    [quota] = set_quota(client, admin, "budget", "cpu_hours", limit=5, period="monthly")
    assert (quota["limit"], quota["used"], quota["reserved"], quota["level"]) == (5, 0, 0, "ok")
    first = submit(client, owner, "hour", "budget")  # worst case 2 CPU-hours: held
    second = submit(client, owner, "hour", "budget")
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    third = submit(client, owner, "hour", "budget")  # 4 held, 1 left: refused, naming the quota
    assert third.status_code == 409, third.text
    problem = third.json()
    assert problem["type"].endswith("/quota-exceeded") and problem["quota"] == "cpu_hours", problem
    assert (
        problem["left"] == pytest.approx(1.0, abs=0.01) and "Ask the project's managers" in problem["detail"]
    )
    states = client.get("/api/v1/projects/budget/quotas", headers=owner.headers).json()
    assert states[0]["reserved"] == pytest.approx(4.0) and states[0]["level"] == "warning", states
    # the jobs end: what they held goes back, what they used (seconds) is charged
    for job in (first.json(), second.json()):  # (one at a time: each takes all the CPUs)
        eventually(
            lambda job=job: (
                client.get(f"/api/v1/jobs/{job['id']}", headers=owner.headers).json()["state"] == "running"
            ),
            60,
            "the job to run",
        )
        (settings.home / "jobs" / job["id"] / "attempt-1" / "work" / "open").touch()
        assert wait_for_end(client, job["id"], owner.headers)["state"] == "succeeded"
    [after] = client.get("/api/v1/projects/budget/quotas", headers=owner.headers).json()
    assert after["reserved"] == pytest.approx(0.0) and 0 < after["used"] < 0.1, after
    assert submit(client, owner, "hour", "budget").status_code == 201
    # every attempt left a usage record; the report sums them
    usage = client.get("/api/v1/projects/budget/usage", params={"by": "app"}, headers=owner.headers).json()
    [row] = usage["rows"]
    assert row["app"] == "hour" and row["attempts"] == 2 and row["cpu_hours"] == pytest.approx(after["used"])
    csv_text = client.get(
        "/api/v1/projects/budget/usage", params={"format": "csv", "by": "user"}, headers=owner.headers
    ).text
    assert csv_text.splitlines()[0] == "user,attempts,cpu_hours,gpu_hours,wall_hours,peak_memory_mb"
    assert owner.email in csv_text
    assert client.get("/api/v1/usage", headers=owner.headers).status_code == 403
    everything = client.get("/api/v1/usage", params={"by": "project"}, headers=admin.headers).json()
    assert "budget" in [r["project"] for r in everything["rows"]]


def test_a_project_may_cut_a_jobs_time_limit_to_what_its_quota_has_left(
    client: TestClient, admin: Account, make_user: Any, settings: Settings
) -> None:
    write_app(
        settings.effective_apps_dir,
        "long",
        ["sleep", "60"],
        resources={"cpus": 1, "memory_mb": 64, "timeout_s": 3600},
    )
    settings.quota_min_cut_s = 2
    owner = make_user()
    project(client, owner, "Cut", "cut")
    r = client.patch("/api/v1/projects/cut", json={"over_quota": "cut"}, headers=owner.headers)
    assert r.status_code == 200 and r.json()["over_quota"] == "cut", r.text
    set_quota(client, admin, "cut", "cpu_hours", limit=1 / 3600, period="none")  # one CPU-second: too few
    with TestClient(create_app(settings)) as quick:  # (a server that runs a limit of 2 s)
        assert submit(quick, owner, "long", "cut").status_code == 409  # less than quota_min_cut_s: refused
        set_quota(client, admin, "cut", "cpu_hours", limit=3 / 3600, period="none")
        answer = submit(quick, owner, "long", "cut")
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert job["resources"]["timeout_s"] == 3, job
        done = wait_for_end(quick, job["id"], owner.headers)
    assert (done["state"], done["reason"]) == ("failed", "quota_exceeded"), done


def test_concurrent_submits_at_the_edge_of_a_quota_never_overspend(
    client: TestClient, admin: Account, make_user: Any, settings: Settings
) -> None:
    """Twenty submits at once into a project with room for five unfinished jobs: exactly five get in."""
    import concurrent.futures

    write_app(
        settings.effective_apps_dir,
        "wait",
        ["sleep", "30"],
        resources={"cpus": 0.01, "memory_mb": 8, "timeout_s": 60},
    )
    owner = make_user()
    project(client, owner, "Edge", "edge")
    set_quota(client, admin, "edge", "concurrent_jobs", limit=5, period="none")
    with TestClient(create_app(settings)) as other:  # a second server process of the same database
        clients = [client, other] * 10
        for c in (client, other):  # both have seen the new app (a reload in progress serves the last view)
            assert c.get("/api/v1/apps/wait", headers=owner.headers).status_code == 200

        def one(c: TestClient) -> int:
            r = c.post("/api/v1/jobs", json={"app": "wait", "project": "edge"}, headers=owner.headers)
            assert r.status_code in (201, 409), r.text
            return r.status_code

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(one, clients))
    assert sorted(codes) == [201] * 5 + [409] * 15, codes
    [quota] = client.get("/api/v1/projects/edge/quotas", headers=owner.headers).json()
    assert quota["reserved"] == 5 and quota["level"] == "exceeded", quota
    listed = client.get("/api/v1/jobs", params={"project": "edge", "limit": 50}, headers=owner.headers).json()
    assert len(listed["items"]) == 5
    for job in listed["items"]:
        client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=owner.headers)


def test_members_ask_for_more_and_managers_decide(client: TestClient, admin: Account, make_user: Any) -> None:
    owner, member = make_user(), make_user()
    project(client, owner, "Asks", "asks")
    add(client, owner, "asks", member.email, "member")
    set_quota(client, admin, "asks", "cpu_hours", limit=10, period="monthly")
    base = "/api/v1/projects/asks/quota-requests"
    r = client.post(
        base, json={"resource": "gpu_hours", "amount": -1, "justification": "x"}, headers=member.headers
    )
    assert r.status_code == 422 and {e["loc"][-1] for e in r.json()["errors"]} == {
        "resource",
        "amount",
        "justification",
    }
    why = "the spring imaging campaign needs twice the fits"
    asked = client.post(
        base, json={"resource": "cpu_hours", "amount": 15, "justification": why}, headers=member.headers
    )
    assert asked.status_code == 201 and asked.json()["state"] == "pending", asked.text
    request_id = asked.json()["id"]
    # the member cannot approve their own request; the owner (a manager or more) can
    assert client.post(f"{base}/{request_id}/approve", json={}, headers=member.headers).status_code == 403
    done = client.post(
        f"{base}/{request_id}/approve", json={"note": "granted for spring"}, headers=owner.headers
    )
    assert done.status_code == 200 and done.json()["state"] == "approved", done.text
    assert client.post(f"{base}/{request_id}/reject", json={}, headers=owner.headers).status_code == 409
    [quota] = client.get("/api/v1/projects/asks/quotas", headers=member.headers).json()
    assert quota["limit"] == 25
    history = client.get(base, headers=member.headers).json()
    assert [(h["state"], h["note"], h["justification"]) for h in history] == [
        ("approved", "granted for spring", why)
    ]


def test_everything_of_a_project_is_404_to_outsiders_and_403_beyond_a_role(
    client: TestClient, admin: Account, make_user: Any, apps: None
) -> None:
    owner, viewer, outsider = make_user(), make_user(), make_user()
    project(client, owner, "Closed", "closed")
    add(client, owner, "closed", viewer.email, "viewer")
    set_quota(client, admin, "closed", "cpu_hours", limit=100, period="monthly")
    job = submit(client, owner, "quick", "closed").json()
    wait_for_end(client, job["id"], owner.headers)
    asked = client.post(
        "/api/v1/projects/closed/quota-requests",
        json={"resource": "cpu_hours", "amount": 1, "justification": "for the test of who sees it"},
        headers=owner.headers,
    ).json()
    ids = {
        m["email"]: m["user_id"]
        for m in client.get("/api/v1/projects/closed", headers=owner.headers).json()["members"]
    }
    base, jobs = "/api/v1/projects/closed", f"/api/v1/jobs/{job['id']}"
    reads = [
        ("GET", base, None),
        ("GET", f"{base}/quotas", None),
        ("GET", f"{base}/usage", None),
        ("GET", f"{base}/quota-requests", None),
        ("GET", "/api/v1/jobs?project=closed", None),
        ("GET", jobs, None),
        ("GET", f"{jobs}/logs", None),
        ("GET", f"{jobs}/events", None),
        ("GET", f"{jobs}/outputs", None),
    ]
    writes = [
        ("PATCH", base, {"name": "Mine now"}),
        ("POST", f"{base}/members", {"email": outsider.email, "role": "owner"}),
        ("PATCH", f"{base}/members/{ids[owner.email]}", {"role": "viewer"}),
        ("DELETE", f"{base}/members/{ids[owner.email]}", None),
        ("POST", f"{base}/join-code", {}),
        ("DELETE", f"{base}/join-code", None),
        ("POST", f"{base}/quota-requests/{asked['id']}/approve", {}),
        ("POST", f"{base}/quota-requests", {"resource": "cpu_hours", "amount": 1, "justification": "x" * 20}),
        ("POST", f"{jobs}/cancel", None),
        ("DELETE", jobs, None),
    ]
    for method, path, body in reads + writes:
        r = client.request(method, path, json=body, headers=outsider.headers)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "Closed" not in r.text and "Mine now" not in r.text
    for method, path, body in reads:
        r = client.request(method, path, json=body, headers=viewer.headers)
        assert r.status_code == 200, (method, path, r.text)
    for method, path, body in writes:
        r = client.request(method, path, json=body, headers=viewer.headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    # nothing changed
    after = client.get(base, headers=owner.headers).json()
    assert after["name"] == "Closed" and len(after["members"]) == 2
    assert client.get(jobs, headers=owner.headers).json()["state"] == "succeeded"


def test_nobody_grants_themselves_more_and_an_allocation_binds_only_what_it_is_of(
    client: TestClient, admin: Account, make_user: Any, apps: None
) -> None:
    owner, manager = make_user(), make_user()
    project(client, owner, "Self", "self-grant")
    add(client, owner, "self-grant", manager.email, "manager")
    set_quota(client, admin, "self-grant", "cpu_hours", limit=1, period="monthly")
    base = "/api/v1/projects/self-grant/quota-requests"
    why = "a justification long enough"
    mine = client.post(
        base, json={"resource": "cpu_hours", "amount": 10**6, "justification": why}, headers=manager.headers
    )
    assert (
        client.post(f"{base}/{mine.json()['id']}/approve", json={}, headers=manager.headers).status_code
        == 403
    )
    assert (
        client.post(f"{base}/{mine.json()['id']}/approve", json={}, headers=owner.headers).status_code == 200
    )
    # a personal project's owner asks an admin
    personal = client.get("/api/v1/projects", headers=owner.headers).json()[0]["slug"]
    set_quota(client, admin, personal, "cpu_hours", limit=1, period="monthly")
    pbase = f"/api/v1/projects/{personal}/quota-requests"
    asked = client.post(
        pbase, json={"resource": "cpu_hours", "amount": 10**6, "justification": why}, headers=owner.headers
    )
    assert (
        client.post(f"{pbase}/{asked.json()['id']}/approve", json={}, headers=owner.headers).status_code
        == 403
    )
    assert (
        client.post(f"{pbase}/{asked.json()['id']}/reject", json={}, headers=admin.headers).status_code == 200
    )
    # a GPU allocation that has ended refuses GPU work only
    set_quota(
        client,
        admin,
        "self-grant",
        "gpu_hours",
        limit=10,
        period="allocation",
        starts_at="2020-01-01T00:00:00Z",
        ends_at="2020-02-01T00:00:00Z",
    )
    assert submit(client, owner, "quick", "self-grant").status_code == 201


def test_usage_csv_cells_are_never_spreadsheet_formulas() -> None:
    from labcloud.services.accounting import COLUMNS, Report

    rows = [{"user": name, **dict.fromkeys(COLUMNS, 0)} for name in ("=cmd|' /C calc'!A0", "+1", "@x", "ok")]
    lines = Report("user", rows).csv().splitlines()[1:]
    assert [line.split(",")[0].strip('"') for line in lines] == ["'=cmd|' /C calc'!A0", "'+1", "'@x", "ok"]
