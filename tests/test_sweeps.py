"""Parameter sweeps through the API, jobs held by the pull executor (so they stay queued until a worker,
played by hand, takes one): a grid's combinations and a list of sets as jobs, every problem of every job
at once, the project's quotas held for the whole sweep, another user's sweep unseen, and cancel-all."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from conftest import Account
from jobs_helpers import write_app
from labcloud.settings import Settings
from test_web import browser_login, csrf_of
from test_worker_api import bearer, claim, register

MODEL = {
    "type": "object",
    "properties": {
        "i_ext": {"type": "number", "minimum": 0, "maximum": 10},
        "tau_m": {"type": "integer", "minimum": 1},
        "label": {"type": "string", "pattern": "^[a-z]+$"},
        "seed": {"type": "integer", "default": 7},
    },
    "required": ["i_ext", "tau_m"],
}


def model_app(client: TestClient, settings: Settings) -> None:
    write_app(
        settings.effective_apps_dir,
        "model",
        ["sh", "-c", "echo {params.i_ext} {params.tau_m}"],
        parameters=MODEL,
        resources={"cpus": 0.1, "memory_mb": 32, "timeout_s": 600},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]


def sweep(client: TestClient, user: Account, **body: Any) -> Any:
    return client.post("/api/v1/sweeps", json={"app": "model", **body}, headers=user.headers)


def jobs_of(client: TestClient, user: Account, sweep_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/sweeps/{sweep_id}/jobs", params={"limit": 200}, headers=user.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_a_grid_makes_a_job_for_every_combination(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    model_app(pclient, settings)
    r = sweep(
        pclient, user, name="f-i curve", params={"label": "abc"}, grid={"i_ext": [1, 2, 3], "tau_m": [10, 20]}
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["total"], made["state"], made["counts"], made["done"]) == (6, "queued", {"queued": 6}, 0.0)
    assert made["varies"] == ["i_ext", "tau_m"] and made["params"] == {"label": "abc"}
    jobs = jobs_of(pclient, user, made["id"])
    assert [(j["params"]["i_ext"], j["params"]["tau_m"]) for j in jobs] == [
        (1, 10),
        (1, 20),
        (2, 10),
        (2, 20),
        (3, 10),
        (3, 20),
    ]
    assert all(j["params"]["label"] == "abc" and j["params"]["seed"] == 7 for j in jobs)  # shared, default
    assert all(j["group_id"] == made["id"] and j["state"] == "queued" for j in jobs)
    assert [j["name"] for j in jobs][:2] == ["f-i curve [1/6]", "f-i curve [2/6]"]
    assert sorted(j["run_number"] for j in jobs) == list(range(1, 7))  # each its own number
    history = pclient.get(f"/api/v1/jobs/{jobs[5]['id']}/events", headers=user.headers).json()
    assert [(e["from_state"], e["to_state"], e["message"]) for e in history] == [
        (None, "queued", "submitted")
    ]
    listed = pclient.get("/api/v1/sweeps", headers=user.headers).json()["items"]
    assert [(s["id"], s["total"]) for s in listed] == [(made["id"], 6)]
    one = pclient.get(f"/api/v1/sweeps/{made['id']}", headers=user.headers).json()
    assert one["counts"] == {"queued": 6}
    after = pclient.post(
        "/api/v1/jobs", json={"app": "model", "params": {"i_ext": 1, "tau_m": 1}}, headers=user.headers
    )
    assert after.json()["run_number"] == 7


def test_sets_make_a_job_each_over_the_shared_parameters(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    model_app(pclient, settings)
    r = sweep(pclient, user, params={"tau_m": 5}, sets=[{"i_ext": 0.5}, {"i_ext": 1.5, "tau_m": 50}])
    assert r.status_code == 201, r.text
    assert r.json()["varies"] == ["i_ext", "tau_m"]
    jobs = jobs_of(pclient, user, r.json()["id"])
    assert [j["params"] for j in jobs] == [
        {"i_ext": 0.5, "tau_m": 5, "seed": 7},
        {"i_ext": 1.5, "tau_m": 50, "seed": 7},
    ]


def test_every_bad_field_of_every_job_is_named_at_once_and_nothing_is_queued(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    model_app(pclient, settings)
    r = sweep(
        pclient,
        user,
        params={"label": "Not Lower"},  # every job's: told once, where it was given
        sets=[{"i_ext": 1, "tau_m": 3}, {"i_ext": 11, "tau_m": 3}, {"i_ext": 2, "tau_m": 0}, {"i_ext": 2}],
        resources={"cpus": -1},
    )
    assert r.status_code == 422, r.text
    errors = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert errors == {
        ("body", "params", "label"),
        ("body", "sets", 1, "i_ext"),
        ("body", "sets", 2, "tau_m"),
        ("body", "sets", 3, "tau_m"),  # missing in that set (and not shared)
        ("body", "resources", "cpus"),
    }, r.json()["errors"]
    g = sweep(pclient, user, grid={"i_ext": [1, 20, 30], "tau_m": [1, "x"]})
    assert g.status_code == 422, g.text
    assert {tuple(e["loc"]) for e in g.json()["errors"]} == {
        ("body", "grid", "i_ext", 1),
        ("body", "grid", "i_ext", 2),
        ("body", "grid", "tau_m", 1),
    }
    assert sweep(pclient, user, params={"i_ext": 1}).status_code == 422  # neither grid nor sets
    both = sweep(pclient, user, grid={"i_ext": [1]}, sets=[{"i_ext": 1}], params={"tau_m": 1})
    assert both.status_code == 422
    assert pclient.get("/api/v1/jobs", headers=user.headers).json()["items"] == []
    assert pclient.get("/api/v1/sweeps", headers=user.headers).json()["items"] == []


def test_a_sweep_larger_than_the_limit_is_refused(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    model_app(pclient, settings)
    pclient.app.state.ctx.settings.sweep_max_jobs = 10  # type: ignore[attr-defined]
    r = sweep(pclient, user, grid={"i_ext": [1, 2, 3, 4], "tau_m": [1, 2, 3]})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "grid"], r.text
    assert "4 x 3 = 12 combinations; at most 10" in r.text
    many = sweep(pclient, user, params={"tau_m": 1}, sets=[{"i_ext": 1}] * 11)
    assert many.status_code == 422 and "at most 10" in many.text
    assert sweep(pclient, user, params={"tau_m": 1}, sets=[{"i_ext": 1}] * 10).status_code == 201


def test_the_projects_quotas_hold_the_whole_sweep(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    model_app(pclient, settings)
    r = pclient.post("/api/v1/projects", json={"name": "Lab", "slug": "lab"}, headers=user.headers)
    assert r.status_code == 201, r.text
    quota = {"limit": 5, "period": "none"}
    assert pclient.put(
        "/api/v1/projects/lab/quotas/concurrent_jobs", json=quota, headers=admin.headers
    ).is_success
    over = sweep(pclient, user, project="lab", params={"tau_m": 1}, grid={"i_ext": [1, 2, 3, 4, 5, 6]})
    assert over.status_code == 409, over.text
    assert "these 6 jobs need up to 6" in over.json()["detail"]
    assert pclient.get("/api/v1/jobs", params={"project": "lab"}, headers=user.headers).json()["items"] == []
    fits = sweep(pclient, user, project="lab", params={"tau_m": 1}, grid={"i_ext": [1, 2, 3, 4, 5]})
    assert fits.status_code == 201, fits.text
    quotas = pclient.get("/api/v1/projects/lab/quotas", headers=user.headers).json()
    assert [(q["resource"], q["reserved"]) for q in quotas] == [("concurrent_jobs", 5)]
    one_more = pclient.post(
        "/api/v1/jobs",
        json={"app": "model", "project": "lab", "params": {"i_ext": 1, "tau_m": 1}},
        headers=user.headers,
    )
    assert one_more.status_code == 409


def test_another_users_sweep_is_not_found(
    pclient: TestClient, settings: Settings, user: Account, make_user: Any
) -> None:
    model_app(pclient, settings)
    made = sweep(pclient, user, params={"tau_m": 1}, grid={"i_ext": [1, 2]}).json()
    other = make_user()
    for method, path in (
        ("GET", f"/api/v1/sweeps/{made['id']}"),
        ("GET", f"/api/v1/sweeps/{made['id']}/jobs"),
        ("POST", f"/api/v1/sweeps/{made['id']}/cancel"),
    ):
        r = pclient.request(method, path, headers=other.headers)
        assert r.status_code == 404, (path, r.text)
    assert pclient.get("/api/v1/sweeps", headers=other.headers).json()["items"] == []
    still = pclient.get(f"/api/v1/sweeps/{made['id']}", headers=user.headers).json()
    assert still["counts"] == {"queued": 2}


def test_cancel_all_cancels_queued_and_running_jobs_and_leaves_ended_ones(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    model_app(pclient, settings)
    token = register(pclient, admin, "sweeper")
    made = sweep(pclient, user, params={"tau_m": 1}, grid={"i_ext": [1, 2, 3, 4]}).json()
    done = claim(pclient, token)
    assert done is not None
    jt = bearer(done["token"])
    assert pclient.post(f"/api/v1/worker/jobs/{done['id']}/start", json={}, headers=jt).is_success
    finish = {"outcome": "exited", "exit_code": 0}
    assert pclient.post(f"/api/v1/worker/jobs/{done['id']}/finish", json=finish, headers=jt).is_success
    running = claim(pclient, token)
    assert running is not None
    rt = bearer(running["token"])
    assert pclient.post(f"/api/v1/worker/jobs/{running['id']}/start", json={}, headers=rt).is_success
    now = pclient.get(f"/api/v1/sweeps/{made['id']}", headers=user.headers).json()
    assert (now["state"], now["counts"]) == ("running", {"queued": 2, "running": 1, "succeeded": 1})
    r = pclient.post(f"/api/v1/sweeps/{made['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    assert r.json()["counts"] == {"cancelled": 2, "cancelling": 1, "succeeded": 1}
    states = {j["id"]: j["state"] for j in jobs_of(pclient, user, made["id"])}
    assert states[done["id"]] == "succeeded" and states[running["id"]] == "cancelling"
    assert claim(pclient, token) is None  # nothing of it is handed out any more
    cancelled = {"outcome": "cancelled"}
    assert pclient.post(f"/api/v1/worker/jobs/{running['id']}/finish", json=cancelled, headers=rt).is_success
    end = pclient.get(f"/api/v1/sweeps/{made['id']}", headers=user.headers).json()
    assert (end["state"], end["done"]) == ("partial", 1.0)


def test_a_sweeps_page_shows_its_progress_and_jobs_and_cancels_all(
    app: Any, pclient: TestClient, settings: Settings, user: Account, make_user: Any
) -> None:
    model_app(pclient, settings)
    made = sweep(pclient, user, name="curve", params={"tau_m": 3}, grid={"i_ext": [0.25, 0.5, 0.75]}).json()
    browser = browser_login(app, user.email, user.password)
    where = f"/sweeps/{made['id']}"
    listed = browser.get("/sweeps").text
    assert where in listed and "curve" in listed
    page = browser.get(where).text
    assert "0 of 3 ended" in page and 'hx-get="' + where + '/progress"' in page  # live until all end
    rows = page.split('id="sweep-jobs"')[1]
    assert '<th scope="col">i_ext</th>' in rows and all(
        f"<td>{v}</td>" in rows for v in ("0.25", "0.5", "0.75")
    )
    assert "tau_m=3" in page  # shared, said once
    job_id = jobs_of(pclient, user, made["id"])[0]["id"]
    assert f'part of sweep <a href="{where}">' in browser.get(f"/jobs/{job_id}").text
    r = browser.post(where + "/cancel", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303
    ended = browser.get(where).text
    assert "3 of 3 ended" in ended and 'data-state="cancelled"' in ended
    assert "hx-get" not in ended.split('id="sweep-progress"')[1][:200] and 'id="cancel-sweep"' not in ended
    only = browser.get(where, params={"state": "cancelled"}).text.split('id="sweep-jobs"')[1]
    assert only.count("<tr>") == 4  # the header and the three
    other = make_user()
    stranger = browser_login(app, other.email, other.password)
    assert stranger.get(where).status_code == 404


def test_a_sweep_is_inserted_in_bulk_whatever_its_size(
    pclient: TestClient, settings: Settings, user: Account
) -> None:
    """As many statements for a hundred jobs as for two: not the single submit's path once per job."""
    model_app(pclient, settings)
    engine = pclient.app.state.ctx.db.engine  # type: ignore[attr-defined]
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counted.append(statement)

    sizes = {}
    event.listen(engine, "before_cursor_execute", count)
    try:
        for n in (2, 100):
            counted.clear()
            r = sweep(pclient, user, params={"tau_m": 1}, grid={"i_ext": [i / 100 for i in range(n)]})
            assert r.status_code == 201, r.text
            sizes[n] = len(counted)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert sizes[100] <= sizes[2], sizes  # (the first submit also looks up what later ones find cached)


def test_in_a_project_that_cuts_time_limits_each_job_is_cut_to_what_is_left(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    model_app(pclient, settings)  # each job: 0.1 CPUs for 600 s at most, 1/60 CPU-hour
    assert pclient.post(
        "/api/v1/projects", json={"name": "Cut", "slug": "cut"}, headers=user.headers
    ).is_success
    assert pclient.patch("/api/v1/projects/cut", json={"over_quota": "cut"}, headers=user.headers).is_success
    quota = {"limit": 2.5 / 60, "period": "none"}  # two and a half jobs' worth
    assert pclient.put("/api/v1/projects/cut/quotas/cpu_hours", json=quota, headers=admin.headers).is_success
    made = sweep(pclient, user, project="cut", params={"tau_m": 1}, grid={"i_ext": [1, 2, 3]})
    assert made.status_code == 201, made.text
    limits = [j["resources"]["timeout_s"] for j in jobs_of(pclient, user, made.json()["id"])]
    assert limits[:2] == [600, 600] and 299 <= limits[2] <= 300  # (the rest, to the second)
