"""Workers as a lab's devices: where and what each is, the status it reports with its heartbeats (checked
against the schemas an admin sets per label), its history, its state, and the pages and API that show them
to everyone logged in; the status options of ``labcloud worker`` against a real server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from conftest import Account, backend
from labcloud.db.models import DeviceSample, DeviceSchema, Worker
from labcloud.services import housekeeping
from labcloud.settings import Settings
from labcloud.web import charts
from labcloud.worker.status import StatusSource
from live_server import ADMIN_EMAIL as SERVER_ADMIN_EMAIL
from live_server import ADMIN_PASSWORD as SERVER_ADMIN_PASSWORD
from live_server import LABCLOUD, eventually, serve, server_env
from test_web import browser_login, csrf_of
from testing.daemons import clean_env

FREE = {"cpus": 4, "memory_mb": 8192, "gpus": 0}
CAMERA_SCHEMA = {
    "type": "object",
    "required": ["camera", "temperature_c"],
    "properties": {
        "camera": {"enum": ["ready", "recording"]},
        "temperature_c": {"type": "number", "maximum": 40},
        "optics": {"type": "object", "properties": {"fps": {"type": "number", "minimum": 1}}},
    },
    "additionalProperties": False,
}
MACHINE = {
    "load1": 0.5,
    "load5": 0.4,
    "load15": 0.3,
    "disk_free_bytes": 12 * 2**30,
    "memory_available_mb": 3000,
}


def _ctx(client: TestClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: TestClient, admin: Account, name: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/workers", json={"name": name, **body}, headers=admin.headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def beat(client: TestClient, token: str, status: Any = None, **extra: Any) -> dict[str, Any]:
    telemetry = {**MACHINE, **extra.pop("telemetry", {})}
    if status is not None:
        telemetry["status"] = status
    r = client.post("/api/v1/worker/heartbeat", json={"telemetry": telemetry, **extra}, headers=bearer(token))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def worker_row(client: TestClient, name: str) -> Worker:
    with _ctx(client).db.session() as session:
        found = session.scalar(select(Worker).where(Worker.name == name))
        assert found is not None
        session.expunge(found)
        return found


def set_worker(client: TestClient, worker_name: str, **values: Any) -> None:
    with _ctx(client).db.session() as session:
        session.execute(update(Worker).where(Worker.name == worker_name).values(**values))


def samples(client: TestClient, name: str) -> list[dict[str, float]]:
    worker_id = worker_row(client, name).id
    with _ctx(client).db.session() as session:
        rows = session.scalars(
            select(DeviceSample.data).where(DeviceSample.worker_id == worker_id).order_by(DeviceSample.at)
        )
        return list(rows)


def fields(problems: list[dict[str, str]]) -> set[str]:
    return {p["field"] for p in problems}


# ------------------------------------------------------------------------------ location, description


def test_location_and_description_are_set_at_registration_and_changed_by_admins_only(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    created = register(
        pclient,
        admin,
        "rig-1",
        labels={"kind": "camera"},
        location="Room B12, bench 3",
        description="Behaviour enclosure\nwith two cameras and a lick sensor",
    )
    assert created["location"] == "Room B12, bench 3"
    assert created["description"] == "Behaviour enclosure\nwith two cameras and a lick sensor"
    assert created["device_state"] == "waiting" and created["state"] == "waiting"
    listed = pclient.get("/api/v1/workers", headers=admin.headers).json()["items"]
    assert [(w["name"], w["location"]) for w in listed] == [("rig-1", "Room B12, bench 3")]

    path = f"/api/v1/workers/{created['id']}"
    r = pclient.patch(path, json={"location": "Room C4"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["location"] == "Room C4" and r.json()["description"].startswith("Behaviour enclosure")
    r = pclient.patch(path, json={"name": "rig-one", "description": "Moved"}, headers=admin.headers)
    assert (r.json()["name"], r.json()["description"], r.json()["location"]) == (
        "rig-one",
        "Moved",
        "Room C4",
    )

    register(pclient, admin, "rig-2")
    for body, where in (
        ({"name": "rig-2"}, None),  # taken: 409
        ({"name": "a/b"}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"location": "two\nlines"}, "location"),
        ({"location": "x" * 201}, "location"),
        ({"description": "bell\x07"}, "description"),
        ({"labels": {"kind": "other"}}, "labels"),  # not changed this way
    ):
        r = pclient.patch(path, json=body, headers=admin.headers)
        if where is None:
            assert r.status_code == 409, r.text
        else:
            assert r.status_code == 422, (body, r.text)
            assert where in json.dumps(r.json()["errors"]), r.text
    bad = pclient.post("/api/v1/workers", json={"name": "x/y"}, headers=admin.headers)
    assert bad.status_code == 422
    assert pclient.patch(path, json={"location": "mine"}, headers=user.headers).status_code == 403
    assert worker_row(pclient, "rig-one").location == "Room C4"
    pclient.post(f"{path}/revoke", headers=admin.headers)
    assert pclient.patch(path, json={"location": "gone"}, headers=admin.headers).status_code == 409


def test_the_admin_registers_a_worker_with_location_and_description_in_the_browser(
    client: TestClient, app: Any, admin: Account
) -> None:
    browser = browser_login(app, admin.email, admin.password)
    csrf = csrf_of(browser.get("/admin/workers").text)
    form = {"csrf_token": csrf, "name": "rig-9", "labels": "kind=camera", "location": "Room B12"}
    r = browser.post("/admin/workers", data={**form, "description": "Two cameras"})
    assert r.status_code == 201, r.text
    assert 'id="worker-token"' in r.text
    assert 'href="/devices/rig-9"' in r.text and "Room B12" in r.text
    row = worker_row(client, "rig-9")
    assert (row.location, row.description, row.labels) == ("Room B12", "Two cameras", {"kind": "camera"})
    r = browser.post("/admin/workers", data={**form, "name": "rig-10", "location": "a\nb"})
    assert r.status_code == 422
    assert re.search(r'id="worker-location-help">\s*<p class="error">', r.text), r.text


# ------------------------------------------------------------------------------ schemas and statuses


def test_a_label_s_schema_checks_every_heartbeat_naming_each_field_and_the_beat_still_counts(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    bad = pclient.put(
        "/api/v1/device-schemas/kind=camera", json={"schema": {"type": 5}}, headers=admin.headers
    )
    assert bad.status_code == 422 and "not a valid JSON Schema" in bad.text
    assert (
        pclient.put("/api/v1/device-schemas/kind", json={"schema": {}}, headers=admin.headers).status_code
        == 422
    )
    r = pclient.put(
        "/api/v1/device-schemas/kind=camera", json={"schema": CAMERA_SCHEMA}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "kind=camera" and r.json()["schema"] == CAMERA_SCHEMA
    again = pclient.put(
        "/api/v1/device-schemas/kind=camera", json={"schema": CAMERA_SCHEMA}, headers=admin.headers
    )
    assert again.status_code == 200
    listed = pclient.get("/api/v1/device-schemas", headers=admin.headers).json()["items"]
    assert [s["label"] for s in listed] == ["kind=camera"]
    assert pclient.get("/api/v1/device-schemas", headers=user.headers).status_code == 403
    assert (
        pclient.put("/api/v1/device-schemas/a=b", json={"schema": {}}, headers=user.headers).status_code
        == 403
    )

    camera = register(pclient, admin, "cam-1", labels={"kind": "camera"})["token"]
    other = register(pclient, admin, "pc-1", labels={"kind": "analysis"})["token"]
    good = {"camera": "ready", "temperature_c": 24.5, "optics": {"fps": 30}}
    assert beat(pclient, camera, good)["status_problems"] == []
    assert worker_row(pclient, "cam-1").status_problems == []

    first_seen = worker_row(pclient, "cam-1").last_heartbeat_at
    assert first_seen is not None
    wrong = {"camera": "broken", "optics": {"fps": 0}, "humidity": 40, "noise": 1}
    answer = beat(pclient, camera, wrong)
    problems = answer["status_problems"]
    assert fields(problems) == {
        "status.camera",  # not one of the values
        "status.temperature_c",  # required, missing
        "status.optics.fps",  # below its minimum
        "status.humidity",  # not allowed
        "status.noise",
    }
    assert all(p["schema"] == "kind=camera" for p in problems)
    by_field = {p["field"]: p["message"] for p in problems}
    assert by_field["status.temperature_c"] == "is required but missing"
    assert "'broken' is not one of" in by_field["status.camera"]
    # the heartbeat counted: the device is alive, its time moved on, its problems kept, its status shown
    row = worker_row(pclient, "cam-1")
    assert row.last_heartbeat_at is not None and row.last_heartbeat_at > first_seen
    assert fields(row.status_problems) == fields(problems)
    device = pclient.get("/api/v1/devices/cam-1", headers=user.headers).json()
    assert device["state"] == "idle" and device["status"] == wrong
    assert fields(device["status_problems"]) == fields(problems)
    worker = pclient.get(f"/api/v1/workers/{row.id}", headers=admin.headers).json()
    assert fields(worker["status_problems"]) == fields(problems)

    # a worker without the label is not held to it; once valid again, the problems are gone
    assert beat(pclient, other, {"anything": ["goes"]})["status_problems"] == []
    assert beat(pclient, camera, good)["status_problems"] == []
    assert worker_row(pclient, "cam-1").status_problems == []
    # with the label's schema, a worker that says nothing of itself is told so
    assert fields(beat(pclient, camera)["status_problems"]) == {"status"}

    # dropped: the next heartbeat is checked against nothing (this server forgets it at once)
    assert pclient.delete("/api/v1/device-schemas/kind=camera", headers=admin.headers).status_code == 204
    assert pclient.delete("/api/v1/device-schemas/kind=camera", headers=admin.headers).status_code == 404
    assert beat(pclient, camera, wrong)["status_problems"] == []


def test_a_status_of_the_wrong_form_or_size_is_not_kept_and_the_device_is_told(
    pclient: TestClient, admin: Account, settings: Settings
) -> None:
    token = register(pclient, admin, "rig-1")["token"]
    answer = beat(pclient, token, ["not", "an", "object"])
    assert answer["status_problems"] == [
        {"field": "status", "message": "a status is a JSON object, not an array", "schema": ""}
    ]
    assert "status" not in worker_row(pclient, "rig-1").telemetry
    big = {"blob": "x" * settings.device_status_max_bytes}
    answer = beat(pclient, token, big)
    assert fields(answer["status_problems"]) == {"status"}
    assert f"at most {settings.device_status_max_bytes}" in answer["status_problems"][0]["message"]
    assert "status" not in worker_row(pclient, "rig-1").telemetry
    # what the worker could not read is said, beside what it could
    answer = beat(
        pclient, token, {"camera": "ready"}, telemetry={"status_error": "the status command: exited with 2"}
    )
    assert answer["status_problems"][0]["message"].endswith("the status command: exited with 2")
    assert worker_row(pclient, "rig-1").telemetry["status"] == {"camera": "ready"}
    assert beat(pclient, token, {"camera": "ready"})["status_problems"] == []


def test_schemas_are_read_again_after_the_cache_time_when_changed_elsewhere(
    pclient: TestClient, admin: Account, settings: Settings
) -> None:
    """Another replica's change reaches this server's cache within device_schema_cache_s, not before."""
    token = register(pclient, admin, "rig-1", labels={"kind": "camera"})["token"]
    settings.device_schema_cache_s = 3600
    assert beat(pclient, token, {"camera": "off"})["status_problems"] == []  # (the cache is filled)
    with _ctx(pclient).db.session() as session:  # as another replica would
        session.add(DeviceSchema(key="kind", value="camera", schema=CAMERA_SCHEMA))
    assert beat(pclient, token, {"camera": "off"})["status_problems"] == []
    settings.device_schema_cache_s = 0
    assert "status.camera" in fields(beat(pclient, token, {"camera": "off"})["status_problems"])


# ------------------------------------------------------------------------------ history


def test_history_is_sampled_at_most_once_an_interval_with_every_numeric_status_field_and_pruned(
    pclient: TestClient, admin: Account, user: Account, settings: Settings
) -> None:
    token = register(pclient, admin, "cam-1", labels={"kind": "camera"})["token"]
    status = {
        "camera": "ready",
        "temperature_c": 24.5,
        "optics": {"fps": 30, "lens": "50mm"},
        "fans": [1200, 1300],
        "door_open": False,
    }
    for _ in range(5):
        beat(pclient, token, status)
    kept = samples(pclient, "cam-1")
    assert kept == [
        {
            "load1": 0.5,
            "disk_free_bytes": 12 * 2**30,
            "memory_available_mb": 3000,
            "status.temperature_c": 24.5,
            "status.optics.fps": 30,
            "status.fans.0": 1200,
            "status.fans.1": 1300,
        }
    ]
    # an interval later (its last sample moved back) the next heartbeat samples again, and only it
    sampled_at = worker_row(pclient, "cam-1").sampled_at
    assert sampled_at is not None
    set_worker(pclient, "cam-1", sampled_at=sampled_at - timedelta(seconds=settings.device_sample_interval_s))
    beat(pclient, token, {**status, "temperature_c": 26.0}, telemetry={"load1": 1.5})
    beat(pclient, token, {**status, "temperature_c": 27.0})
    kept = samples(pclient, "cam-1")
    assert [s["status.temperature_c"] for s in kept] == [24.5, 26.0] and kept[1]["load1"] == 1.5
    # an invalid status's numbers stay out of the history (the machine's are kept)
    pclient.put("/api/v1/device-schemas/kind=camera", json={"schema": CAMERA_SCHEMA}, headers=admin.headers)
    set_worker(pclient, "cam-1", sampled_at=datetime.now(UTC) - timedelta(hours=1))
    assert beat(pclient, token, {"camera": "ready", "temperature_c": 99})["status_problems"]
    assert samples(pclient, "cam-1")[-1] == {
        "load1": 0.5,
        "disk_free_bytes": 12 * 2**30,
        "memory_available_mb": 3000,
    }

    history = pclient.get("/api/v1/devices/cam-1", headers=user.headers).json()["history"]
    assert len(history["times"]) == 3 and history["interval_s"] == settings.device_sample_interval_s
    assert list(history["series"])[:3] == ["load1", "disk_free_bytes", "memory_available_mb"]
    assert history["series"]["status.temperature_c"] == [24.5, 26.0, None]
    assert history["series"]["load1"] == [0.5, 1.5, 0.5]

    # housekeeping removes what is older than device_history_hours, and nothing newer
    worker_id = worker_row(pclient, "cam-1").id
    old = datetime.now(UTC) - timedelta(hours=settings.device_history_hours, minutes=5)
    with _ctx(pclient).db.session() as session:
        for minutes in range(3):
            session.add(
                DeviceSample(worker_id=worker_id, at=old - timedelta(minutes=minutes), data={"load1": 9})
            )
    assert len(samples(pclient, "cam-1")) == 6
    report = housekeeping.run_once(_ctx(pclient).db, _ctx(pclient).storage, settings)
    assert report.samples_pruned == 3 and not report.problems
    assert [s["load1"] for s in samples(pclient, "cam-1")] == [0.5, 1.5, 0.5]
    # ?hours= looks back less far than all that is kept
    with _ctx(pclient).db.session() as session:
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        session.execute(
            update(DeviceSample).where(DeviceSample.worker_id == worker_id).values(at=two_hours_ago)
        )
    recent = pclient.get("/api/v1/devices/cam-1?hours=1", headers=user.headers).json()["history"]
    assert recent["times"] == [] and recent["series"] == {}
    assert len(pclient.get("/api/v1/devices/cam-1", headers=user.headers).json()["history"]["times"]) == 3


# ------------------------------------------------------------------------------ states


def submit(client: TestClient, account: Account) -> dict[str, Any]:
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=account.headers)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def test_device_states_busy_idle_draining_down_waiting_and_revoked(
    pclient: TestClient, admin: Account, user: Account, settings: Settings
) -> None:
    settings.device_down_after_s = 120  # longer than the lease (30 s): the setting decides, not the lease
    token = register(pclient, admin, "rig-1")["token"]
    worker_id = register(pclient, admin, "rig-2")["id"]

    def state(name: str) -> str:
        device: dict[str, Any] = pclient.get(f"/api/v1/devices/{name}", headers=user.headers).json()
        return str(device["state"])

    assert state("rig-1") == "waiting"
    beat(pclient, token)
    assert state("rig-1") == "idle"
    job = submit(pclient, user)
    r = pclient.post("/api/v1/worker/claim", json={"free": FREE, "wait_s": 0}, headers=bearer(token))
    assert r.status_code == 200 and r.json()["job"]["id"] == job["id"]
    assert state("rig-1") == "busy"
    device = pclient.get("/api/v1/devices/rig-1", headers=user.headers).json()
    assert [j["id"] for j in device["jobs"]] == [job["id"]]
    busy = pclient.get("/api/v1/devices?state=busy", headers=user.headers).json()["items"]
    assert [d["name"] for d in busy] == ["rig-1"]
    up = pclient.get("/api/v1/devices?state=up", headers=user.headers).json()["items"]
    assert [d["name"] for d in up] == ["rig-1"]
    assert pclient.post(f"/api/v1/workers/{device['id']}/drain", headers=admin.headers).status_code == 200
    assert state("rig-1") == "draining"

    seen = worker_row(pclient, "rig-1").last_heartbeat_at
    assert seen is not None
    set_worker(pclient, "rig-1", last_heartbeat_at=seen - timedelta(seconds=100))
    assert state("rig-1") == "draining"  # past its lease, not yet down
    worker = pclient.get(f"/api/v1/workers/{device['id']}", headers=admin.headers).json()
    assert (worker["state"], worker["device_state"]) == ("lost", "draining")  # the old field keeps its sense
    set_worker(pclient, "rig-1", last_heartbeat_at=seen - timedelta(seconds=121))
    assert state("rig-1") == "down"
    down = pclient.get("/api/v1/devices?state=down", headers=user.headers).json()["items"]
    assert [d["name"] for d in down] == ["rig-1"]
    settings.device_down_after_s = 0  # the lease, then
    set_worker(pclient, "rig-1", last_heartbeat_at=seen - timedelta(seconds=31))
    assert state("rig-1") == "down"
    beat(pclient, token, jobs=[{"id": job["id"], "attempt": 1}])
    assert state("rig-1") == "draining"

    assert pclient.post(f"/api/v1/workers/{worker_id}/revoke", headers=admin.headers).status_code == 200
    names = [d["name"] for d in pclient.get("/api/v1/devices", headers=user.headers).json()["items"]]
    assert names == ["rig-1"]
    assert pclient.get("/api/v1/devices/rig-2", headers=user.headers).status_code == 404
    assert pclient.get("/api/v1/devices?state=nonsense", headers=user.headers).status_code == 422


def test_everyone_logged_in_sees_the_devices_without_tokens_and_only_the_jobs_they_may_see(
    pclient: TestClient, admin: Account, make_user: Any
) -> None:
    alice, bob = make_user(), make_user()
    created = register(pclient, admin, "rig-1", labels={"kind": "camera"}, location="Room B12")
    token = created["token"]
    beat(pclient, token, {"camera": "ready"})
    job = submit(pclient, alice)
    assert (
        pclient.post(
            "/api/v1/worker/claim", json={"free": FREE, "wait_s": 0}, headers=bearer(token)
        ).status_code
        == 200
    )

    for who, visible in ((alice, True), (bob, False), (admin, True)):
        listed = pclient.get("/api/v1/devices", headers=who.headers)
        assert listed.status_code == 200, listed.text
        (device,) = listed.json()["items"]
        text = listed.text
        assert token not in text and created["token_prefix"] not in text and "token" not in device
        assert (device["name"], device["location"], device["state"]) == ("rig-1", "Room B12", "busy")
        assert device["status"] == {"camera": "ready"} and device["machine"]["load1"] == 0.5
        if visible:
            assert [j["id"] for j in device["jobs"]] == [job["id"]] and device["other_jobs"] == 0
        else:
            assert device["jobs"] == [] and device["other_jobs"] == 1 and job["id"] not in text
    assert pclient.get("/api/v1/devices").status_code == 401
    assert pclient.get("/api/v1/devices/no-such-device", headers=bob.headers).status_code == 404
    by_label = pclient.get("/api/v1/devices?label=kind=camera", headers=bob.headers).json()["items"]
    assert [d["name"] for d in by_label] == ["rig-1"]
    assert pclient.get("/api/v1/devices?label=kind=other", headers=bob.headers).json()["items"] == []


# ------------------------------------------------------------------------------ pages


def test_the_devices_pages_show_state_status_problems_and_charts(
    pclient: TestClient, app: Any, admin: Account, user: Account, settings: Settings
) -> None:
    pclient.put("/api/v1/device-schemas/kind=camera", json={"schema": CAMERA_SCHEMA}, headers=admin.headers)
    cam = register(
        pclient, admin, "cam-1", labels={"kind": "camera"}, location="Room B12", description="Two cameras <b>"
    )["token"]
    register(pclient, admin, "rig-2", location="Room C4")
    for temperature in (24.0, 25.5, 27.0):  # three samples, a minute apart
        set_worker(pclient, "cam-1", sampled_at=datetime.now(UTC) - timedelta(minutes=5))
        beat(pclient, cam, {"camera": "recording", "temperature_c": temperature, "optics": {"fps": 30}})
    with _ctx(pclient).db.session() as session:  # spread them out over the last hours
        ids = session.scalars(select(DeviceSample.id).order_by(DeviceSample.id)).all()
        for minutes_ago, sample_id in zip((3, 2, 1), ids, strict=True):
            at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
            session.execute(update(DeviceSample).where(DeviceSample.id == sample_id).values(at=at))

    browser = browser_login(app, user.email, user.password)
    page = browser.get("/devices")
    assert page.status_code == 200
    html = page.text
    assert 'href="/devices"' in html and 'aria-current="page"' in html
    row = re.search(r'<tr data-device="cam-1" data-state="idle">(.*?)</tr>', html, re.S)
    assert row, html
    assert "Room B12" in row.group(1) and "Two cameras &lt;b&gt;" in row.group(1)
    assert "temperature_c:</span> 27.0" in row.group(1) and "camera:</span> recording" in row.group(1)
    assert "ago" in row.group(1) and "kind=camera" in row.group(1)
    assert '<tr data-device="rig-2" data-state="waiting">' in html
    rows = browser.get("/ui/devices/rows?state=waiting").text
    assert 'data-device="rig-2"' in rows and 'data-device="cam-1"' not in rows
    # a name from before names could not have a slash: its page is found by its id
    set_worker(pclient, "rig-2", name="lab/rig-2")
    legacy = worker_row(pclient, "lab/rig-2").id
    assert f'href="/devices/{legacy}"' in browser.get("/devices").text
    assert "<h1>lab/rig-2</h1>" in browser.get(f"/devices/{legacy}").text

    page = browser.get("/devices/cam-1")
    assert page.status_code == 200
    html = page.text
    assert "<h1>cam-1</h1>" in html and 'id="device-status"' in html
    assert re.search(
        r'<tr data-field="optics.fps"><th scope="row"><code>optics.fps</code></th><td>30</td>', html
    )
    charted = re.findall(r'<figure class="line-chart" data-field="([^"]+)">', html)
    assert charted == [
        "load1",
        "disk_free_bytes",
        "memory_available_mb",
        "status.optics.fps",
        "status.temperature_c",
    ]
    chart = html[html.index('data-field="status.temperature_c"') :]
    chart = chart[: chart.index("</figure>")]
    assert "from 24 to 27" in chart and "now 27" in chart
    path = re.search(r'<path d="(M[^"]+)" class="series"', chart)
    assert path and len(path.group(1).split(" L")) == 3  # three samples, one line
    assert 'name="description"' not in html  # only admins change it

    # a status that breaks the schema: its problems on both pages
    beat(pclient, cam, {"camera": "on fire", "temperature_c": 80})
    status = browser.get("/devices/cam-1/status").text
    assert 'id="status-problems"' in status
    assert "<code>status.camera</code>" in status and "<code>status.temperature_c</code>" in status
    assert "2 problems with its status" in browser.get("/ui/devices/rows").text
    assert browser.get("/devices/no-such").status_code == 404
    assert browser.get("/admin/device-schemas").status_code == 403
    refused = browser.post("/devices/cam-1", data={"csrf_token": csrf_of(html), "name": "x"})
    assert refused.status_code == 403


def test_admins_change_a_device_and_the_schemas_in_the_browser(
    pclient: TestClient, app: Any, admin: Account
) -> None:
    register(pclient, admin, "cam-1", labels={"kind": "camera"})
    register(pclient, admin, "cam-2")
    browser = browser_login(app, admin.email, admin.password)
    page = browser.get("/devices/cam-1").text
    form = {
        "csrf_token": csrf_of(page),
        "name": "cam-one",
        "location": "Room B12",
        "description": "New\nlens",
    }
    r = browser.post("/devices/cam-1", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/devices/cam-one"
    row = worker_row(pclient, "cam-one")
    assert (row.location, row.description) == ("Room B12", "New\nlens")
    r = browser.post("/devices/cam-one", data={**form, "name": "cam-2"})
    assert r.status_code == 409 and 'aria-invalid="true"' in r.text and "cam-2" in r.text
    r = browser.post("/devices/cam-one", data={**form, "location": "x" * 300})
    assert r.status_code == 422 and re.search(r'id="device-location-help"><p class="error">', r.text)

    page = browser.get("/admin/device-schemas").text
    assert "No schemas" in page
    csrf = csrf_of(page)
    r = browser.post(
        "/admin/device-schemas", data={"csrf_token": csrf, "label": "kind=camera", "schema": "{nope"}
    )
    assert r.status_code == 422 and "not JSON" in r.text
    r = browser.post("/admin/device-schemas", data={"csrf_token": csrf, "label": "camera", "schema": "{}"})
    assert r.status_code == 422 and re.search(r'id="schema-label-help"><p class="error">', r.text)
    text = json.dumps(CAMERA_SCHEMA)
    r = browser.post(
        "/admin/device-schemas", data={"csrf_token": csrf, "label": "kind=camera", "schema": text}
    )
    assert r.status_code == 200 and "is set" in r.text  # (after the redirect)
    assert '<article class="schema" data-label="kind=camera"' in r.text
    assert '<a href="/devices/cam-one">cam-one</a>' in r.text
    assert (
        pclient.get("/api/v1/device-schemas/kind=camera", headers=admin.headers).json()["schema"]
        == CAMERA_SCHEMA
    )
    r = browser.post("/admin/device-schemas/delete", data={"csrf_token": csrf, "label": "kind=camera"})
    assert r.status_code == 200 and "is gone" in r.text
    assert pclient.get("/api/v1/device-schemas/kind=camera", headers=admin.headers).status_code == 404


# ------------------------------------------------------------------------------ charts and statuses


def test_a_chart_breaks_its_line_at_gaps_and_averages_many_samples() -> None:
    until = datetime(2026, 1, 2, tzinfo=UTC)
    since = until - timedelta(hours=24)
    times = [since + timedelta(minutes=m) for m in (10, 11, 12, 300, 301, 600)]
    values: list[float | None] = [1.0, 2.0, None, 4.0, 5.0, 6.0]
    chart = charts.line_chart("x", "X", times, values, since, until, 180, str)
    assert chart is not None
    assert len(chart.paths) == 2 and len(chart.dots) == 1  # 10-11, 300-301, and 600 alone
    assert (chart.low, chart.high, chart.latest) == ("1.0", "6.0", "6.0")
    many = [since + timedelta(seconds=30 * i) for i in range(2880)]
    dense = charts.line_chart("x", "X", many, [float(i % 7) for i in range(2880)], since, until, 90, str)
    assert dense is not None and len(dense.paths) == 1 and not dense.dots
    assert len(dense.paths[0].split(" L")) == charts.MAX_POINTS
    assert charts.line_chart("x", "X", times, [None] * 6, since, until, 180, str) is None


def test_the_status_comes_from_a_command_and_a_file_and_what_fails_is_said(tmp_path: Path) -> None:
    file = tmp_path / "status.json"
    file.write_text(json.dumps({"camera": "ready", "temperature_c": 20}))
    assert StatusSource(file=file).read() == ({"camera": "ready", "temperature_c": 20}, None)
    both = StatusSource(command='echo \'{"temperature_c": 21.5, "fps": 30}\'', file=file)
    assert both.read() == ({"camera": "ready", "temperature_c": 21.5, "fps": 30}, None)
    status, error = StatusSource(command="echo oops >&2; exit 3", file=file).read()
    assert status == {"camera": "ready", "temperature_c": 20}
    assert error == "the status command: exited with 3: oops"
    for command, said in (
        ("echo '[1, 2]'", "a status is a JSON object"),
        ("echo not json", "not JSON"),
        ("echo '{\"t\": NaN}'", "not JSON"),
    ):
        assert StatusSource(command=command).read()[0] is None
        assert said in str(StatusSource(command=command).read()[1])
    assert "No such file" in str(StatusSource(file=tmp_path / "missing.json").read()[1])
    # one that hangs is killed with what it started
    marker = tmp_path / "child.pid"
    began = time.monotonic()
    status, error = StatusSource(command=f"sleep 30 & echo $! > {marker}; wait", timeout_s=0.5).read()
    assert status is None and error == "the status command: took longer than 0.5 s and was stopped"
    assert time.monotonic() - began < 10
    child = int(marker.read_text())

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"

    eventually(gone, 10, "the status command's child to be killed")


# ------------------------------------------------------------------------------ a real server and worker


@pytest.fixture
def live(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[tuple[str, httpx.Client]]:
    """``labcloud serve`` with short leases (heartbeats every second), and an admin's client of its API."""
    env = server_env(
        settings.home,
        (SERVER_ADMIN_EMAIL, SERVER_ADMIN_PASSWORD),
        database_url if backend() == "postgresql" else None,
        lease_seconds="4",
        executor="pull",
    )
    with serve(env, tmp_path / "server.log") as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(
            "/api/v1/auth/login", data={"username": SERVER_ADMIN_EMAIL, "password": SERVER_ADMIN_PASSWORD}
        )
        r.raise_for_status()
        http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield url, http


def test_labcloud_worker_reports_the_status_a_command_and_a_file_give(
    live: tuple[str, httpx.Client], tmp_path: Path
) -> None:
    url, http = live
    env = {**clean_env(), "LABCLOUD_SERVER": url, "LABCLOUD_TOKEN": http.headers["Authorization"][7:]}
    env["LABCLOUD_CLIENT_CONFIG"] = str(tmp_path / "no-client.json")
    added = subprocess.run(
        [*LABCLOUD, "workers", "add", "cam-1", "--label", "kind=camera", "--location", "Room B12",
         "--description", "Two cameras"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("lcw_")
    edited = subprocess.run(
        [*LABCLOUD, "workers", "edit", "cam-1", "--location", "Room C4"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert edited.returncode == 0 and "Room C4" in edited.stderr, edited.stderr
    listing = subprocess.run(
        [*LABCLOUD, "workers", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    (listed,) = json.loads(listing.stdout)
    assert (listed["location"], listed["description"]) == ("Room C4", "Two cameras")
    r = http.put("/api/v1/device-schemas/kind=camera", json={"schema": CAMERA_SCHEMA})
    assert r.status_code == 201, r.text

    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"camera": "ready"}))
    log_path = tmp_path / "worker.log"
    script = tmp_path / "read_sensors.py"
    script.write_text('import json\nprint(json.dumps({"temperature_c": 21.5}))\n')
    command = f"{sys.executable} {script}"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [*LABCLOUD, "worker", "--server", url, "--work-dir", str(tmp_path / "work"), "--sandbox", "off",
             "--cpus", "1", "--memory-mb", "256", "--status-command", command,
             "--status-file", str(status_file)],
            env={**clean_env(), "LABCLOUD_WORKER_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def device(wanted: dict[str, Any]) -> dict[str, Any] | None:
            assert worker.poll() is None, log_path.read_text()
            found: dict[str, Any] = http.get("/api/v1/devices/cam-1").json()
            return found if found["status"] == wanted else None

        shown = eventually(lambda: device({"camera": "ready", "temperature_c": 21.5}), 60, "the status")
        assert shown["status_problems"] == [] and shown["state"] == "idle" and shown["location"] == "Room C4"
        # the file changes: the next heartbeats say so; a wrong value is named, and the worker hears of it
        status_file.write_text(json.dumps({"camera": "melting"}))
        shown = eventually(lambda: device({"camera": "melting", "temperature_c": 21.5}), 30, "the new status")
        shown = eventually(
            lambda: (d := http.get("/api/v1/devices/cam-1").json())["status_problems"] and d, 30, "problems"
        )
        assert fields(shown["status_problems"]) == {"status.camera"}
        eventually(
            lambda: "the server finds this worker's status wrong: status.camera" in log_path.read_text(),
            30,
            "the worker to log the problem",
        )
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    samples_now = http.get("/api/v1/devices/cam-1").json()["history"]
    assert samples_now["series"]["status.temperature_c"][0] == 21.5
