"""Sessions across devices, through the API with devices played by hand over the worker protocol: one job per
chosen device with its own and shared parameters, every problem of every device at once, the state rolled
up, cancel-all, a device busy elsewhere reported, a device lost mid-session failing only its own part."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from conftest import Account
from jobs_helpers import write_app
from labcloud.db.models import Job
from labcloud.services import claims
from labcloud.settings import Settings
from test_web import browser_login, csrf_of
from test_worker_api import bearer, claim, heartbeat, register

RECORD = {
    "type": "object",
    "properties": {
        "prefix": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "duration_s": {"type": "number", "minimum": 1, "maximum": 3600},
        "fps": {"type": "integer", "minimum": 1, "maximum": 240},
    },
    "required": ["prefix", "duration_s"],
}


def _record_app(client: TestClient, settings: Settings) -> None:
    write_app(
        settings.effective_apps_dir,
        "record",
        ["sh", "-c", "echo {params.prefix}"],
        parameters=RECORD,
        resources={"cpus": 0.1, "memory_mb": 32, "timeout_s": 600},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]


def _start(client: TestClient, user: Account, **body: Any) -> Any:
    return client.post("/api/v1/sessions", json={"app": "record", **body}, headers=user.headers)


def _finish(client: TestClient, got: dict[str, Any], code: int = 0) -> None:
    jt = bearer(got["token"])
    assert client.post(f"/api/v1/worker/jobs/{got['id']}/start", json={}, headers=jt).is_success
    r = client.post(
        f"/api/v1/worker/jobs/{got['id']}/finish", json={"outcome": "exited", "exit_code": code}, headers=jt
    )
    assert r.is_success, r.text


def test_a_session_runs_one_job_on_each_chosen_device_with_its_own_parameters(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    tokens = {name: register(pclient, admin, name) for name in ("box-1", "box-2", "box-3")}
    r = _start(
        pclient,
        user,
        name="mouse 12",
        params={"duration_s": 60, "fps": 30},
        devices=[
            {"worker": "box-1", "params": {"prefix": "m12-a"}},
            {"worker": "box-2", "params": {"prefix": "m12-b"}},
        ],
    )
    assert r.status_code == 201, r.text
    started = r.json()
    assert (started["state"], started["counts"]) == ("queued", {"queued": 2})
    assert [(d["worker"], d["params"]) for d in started["devices"]] == [
        ("box-1", {"duration_s": 60, "fps": 30, "prefix": "m12-a"}),
        ("box-2", {"duration_s": 60, "fps": 30, "prefix": "m12-b"}),
    ]
    assert claim(pclient, tokens["box-3"]) is None  # not chosen
    one = claim(pclient, tokens["box-1"])
    assert one is not None and one["params"]["prefix"] == "m12-a"
    assert claim(pclient, tokens["box-1"]) is None  # box-2's part is box-2's
    _finish(pclient, one)
    now = pclient.get(f"/api/v1/sessions/{started['id']}", headers=user.headers).json()
    assert (now["state"], now["counts"]) == ("running", {"succeeded": 1, "queued": 1})
    two = claim(pclient, tokens["box-2"])
    assert two is not None and two["params"]["prefix"] == "m12-b"
    _finish(pclient, two, code=1)
    done = pclient.get(f"/api/v1/sessions/{started['id']}", headers=user.headers).json()
    assert (done["state"], done["counts"]) == ("partial", {"succeeded": 1, "failed": 1})
    job = pclient.get(f"/api/v1/jobs/{done['devices'][0]['job_id']}", headers=user.headers).json()
    assert job["group_id"] == started["id"] and job["workers"] == ["box-1"]
    listed = pclient.get("/api/v1/sessions", headers=user.headers).json()["items"]
    assert [s["id"] for s in listed] == [started["id"]]


def test_every_problem_of_every_device_is_told_at_once_and_nothing_is_queued(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    register(pclient, admin, "box-a")
    r = _start(
        pclient,
        user,
        params={"duration_s": 0},  # below the minimum: every device's, told once
        devices=[
            {"worker": "box-a", "params": {"prefix": "Bad Prefix"}},
            {"worker": "box-missing", "params": {"prefix": "ok"}},
        ],
    )
    assert r.status_code == 422, r.text
    errors = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert ("body", "devices", 0, "params", "prefix") in errors
    assert ("body", "devices", 1, "worker") in errors
    assert [loc for loc in errors if loc[:3] == ("body", "params", "duration_s")] == [
        ("body", "params", "duration_s")
    ]
    assert pclient.get("/api/v1/jobs", headers=user.headers).json()["items"] == []
    twice = _start(
        pclient,
        user,
        params={"duration_s": 5},
        devices=[
            {"worker": "box-a", "params": {"prefix": "a"}},
            {"worker": "box-a", "params": {"prefix": "b"}},
        ],
    )
    assert twice.status_code == 422 and "chosen twice" in twice.text
    assert _start(pclient, user, params={"duration_s": 5, "prefix": "p"}).status_code == 422  # no devices


def test_cancel_all_stops_what_has_not_ended(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    tokens = {name: register(pclient, admin, name) for name in ("c-1", "c-2", "c-3")}
    devices = [{"worker": n, "params": {"prefix": n}} for n in tokens]
    started = _start(pclient, user, params={"duration_s": 60}, devices=devices).json()
    done = claim(pclient, tokens["c-1"])
    assert done is not None
    _finish(pclient, done)
    running = claim(pclient, tokens["c-2"])
    assert running is not None
    assert pclient.post(
        f"/api/v1/worker/jobs/{running['id']}/start", json={}, headers=bearer(running["token"])
    ).is_success
    r = pclient.post(f"/api/v1/sessions/{started['id']}/cancel", headers=user.headers)
    assert r.status_code == 200, r.text
    by_worker = {d["worker"]: d["state"] for d in r.json()["devices"]}
    assert by_worker == {"c-1": "succeeded", "c-2": "cancelling", "c-3": "cancelled"}
    beat = heartbeat(pclient, tokens["c-2"], jobs=[{"id": running["id"], "attempt": 1}])
    assert beat["cancel"] == [running["id"]]  # the device learns of it with its next heartbeat


def test_a_device_busy_in_another_session_is_reported_and_its_part_waits(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    token = register(pclient, admin, "shared-box")
    register(pclient, admin, "free-box")
    first = _start(
        pclient,
        user,
        name="morning",
        params={"duration_s": 60},
        devices=[{"worker": "shared-box", "params": {"prefix": "a"}}],
    ).json()
    second = _start(
        pclient,
        user,
        name="noon",
        params={"duration_s": 60},
        devices=[
            {"worker": "shared-box", "params": {"prefix": "b"}},
            {"worker": "free-box", "params": {"prefix": "c"}},
        ],
    ).json()
    notes = {d["worker"]: d["note"] for d in second["devices"]}
    assert "busy in session 'morning'" in notes["shared-box"] and notes["free-box"] == ""
    got = claim(pclient, token)
    assert got is not None and got["id"] == first["devices"][0]["job_id"]  # the older session's part first


def test_a_device_lost_mid_session_fails_its_part_and_is_not_handed_it_again(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    tokens = {name: register(pclient, admin, name) for name in ("l-1", "l-2")}
    started = _start(
        pclient,
        user,
        params={"duration_s": 60},
        devices=[{"worker": n, "params": {"prefix": n}} for n in tokens],
    ).json()
    lost = claim(pclient, tokens["l-1"])
    kept = claim(pclient, tokens["l-2"])
    assert lost is not None and kept is not None
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(lost["id"]))
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with ctx.db.session() as session:
        assert claims.expire_leases(session) == 1
    assert claim(pclient, tokens["l-1"]) is None  # back again: its old part is over
    _finish(pclient, kept)
    done = pclient.get(f"/api/v1/sessions/{started['id']}", headers=user.headers).json()
    by_worker = {d["worker"]: (d["state"], d["reason"]) for d in done["devices"]}
    assert by_worker == {"l-1": ("failed", "worker_lost"), "l-2": ("succeeded", None)}
    assert done["state"] == "partial"


def test_labels_choose_every_connected_device_that_has_them(
    pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    up = [register(pclient, admin, f"lab-{i}", kind="enclosure") for i in range(3)]
    register(pclient, admin, "lab-silent", kind="enclosure")  # never heard from: not chosen
    register(pclient, admin, "other", kind="camera")
    for token in up:
        heartbeat(pclient, token)
    r = _start(pclient, user, params={"duration_s": 5, "prefix": "x"}, labels={"kind": "enclosure"})
    assert r.status_code == 201, r.text
    assert [d["worker"] for d in r.json()["devices"]] == ["lab-0", "lab-1", "lab-2"]
    none = _start(pclient, user, params={"duration_s": 5, "prefix": "x"}, labels={"kind": "nothing"})
    assert none.status_code == 422 and "no connected device" in none.text


def test_sessions_are_their_owners_and_their_projects(
    pclient: TestClient, settings: Settings, admin: Account, user: Account, make_user: Any
) -> None:
    _record_app(pclient, settings)
    register(pclient, admin, "p-1")
    started = _start(
        pclient, user, params={"duration_s": 5}, devices=[{"worker": "p-1", "params": {"prefix": "a"}}]
    ).json()
    other = make_user()
    assert pclient.get(f"/api/v1/sessions/{started['id']}", headers=other.headers).status_code == 404
    assert pclient.post(f"/api/v1/sessions/{started['id']}/cancel", headers=other.headers).status_code == 404
    assert pclient.get(f"/api/v1/sessions/{started['id']}", headers=admin.headers).status_code == 200


def test_a_session_is_started_from_an_apps_page_and_followed_on_its_own(
    app: Any, pclient: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    _record_app(pclient, settings)
    tokens = {name: register(pclient, admin, name) for name in ("web-1", "web-2")}
    heartbeat(pclient, tokens["web-1"])
    browser = browser_login(app, user.email, user.password)
    form = browser.get("/apps/record").text
    assert 'id="run-on-devices"' in form and 'value="web-1"' in form and 'value="web-2"' in form
    base = {"csrf_token": csrf_of(form), "params.duration_s": "30", "name": "trial", "as_session": "1"}

    bad = browser.post(
        "/apps/record/run",
        data={
            **base,
            "device": ["web-1", "web-2"],
            "device_params.web-1": "prefix=Bad Name",
            "device_params.web-2": "nope",
        },
    )
    assert bad.status_code == 422
    assert "Device web-1" in bad.text and "Device web-2" in bad.text  # in the summary, each named
    assert pclient.get("/api/v1/sessions", headers=user.headers).json()["items"] == []

    r = browser.post(
        "/apps/record/run",
        data={
            **base,
            "device": ["web-1", "web-2"],
            "device_params.web-1": "prefix=a1",
            "device_params.web-2": "prefix=b2",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    where = r.headers["location"]
    page = browser.get(where).text
    assert 'data-device="web-1"' in page and "prefix=a1" in page and "prefix=b2" in page
    assert 'hx-get="' + where + '/parts"' in page  # live until every part has ended
    listed = browser.get("/sessions").text
    assert where in listed and "trial" in listed
    r = browser.post(where + "/cancel", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303
    ended = browser.get(where).text
    assert 'data-state="cancelled"' in ended and "hx-get" not in ended.split('id="session-parts"')[1][:200]
    job_id = pclient.get(f"/api/v1/sessions/{where.rsplit('/', 1)[1]}", headers=user.headers).json()[
        "devices"
    ][0]["job_id"]
    assert "part of session" in browser.get(f"/jobs/{job_id}").text
