"""Jobs end to end on the local executor: real processes, real sandbox, real database."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from conftest import Account
from jobs_helpers import follow_log, py, wait_for_end, write_app
from labcloud.db.models import JobInput
from labcloud.execution.sandbox import Sandboxing
from labcloud.services import job_logs
from labcloud.services.job_states import JobState
from labcloud.settings import Settings
from live_server import eventually


def put_file(client: TestClient, account: Account, rel: str, data: bytes) -> None:
    r = client.put(f"/api/v1/files/{rel}", content=data, headers=account.headers)
    assert r.status_code == 201, r.text


def submit(client: TestClient, account: Account, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/jobs", json=body, headers=account.headers)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def test_apps_are_listed_with_everything_a_form_needs(client: TestClient, user: Account) -> None:
    body = client.get("/api/v1/apps", headers=user.headers).json()
    names = [a["name"] for a in body["items"]]
    assert {"hello", "spikes", "lif"} <= set(names)
    assert "problems" not in body  # only admins see registry problems
    spikes = client.get("/api/v1/apps/spikes", headers=user.headers).json()
    detect = spikes["versions"]["1.0"]["entrypoints"]["detect"]
    assert detect["parameters"]["properties"]["threshold"]["default"] == 4.5
    assert detect["inputs"]["trace"]["required"] is True
    assert detect["resources"]["timeout_s"] == 600
    r = client.get("/api/v1/apps/nope", headers=user.headers)
    assert r.status_code == 404 and "spikes" in r.json()["detail"]


def test_hello_runs_to_success_with_log_progress_history_and_outputs(
    client: TestClient, user: Account
) -> None:
    job = submit(client, user, {"app": "hello", "params": {"name": "Ada", "times": 3}, "tags": {"exp": "t1"}})
    assert job["state"] == "queued" and job["version"] == "1.0" and job["entrypoint"] == "greet"
    assert len(job["spec_hash"]) == 64 and job["spec"]["command"][0] == "python"
    log = follow_log(client, job["id"], user.headers)
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
    assert done["state"] == "succeeded", (done, log)
    assert done["progress"] == 1.0 and done["exit_code"] == 0 and done["attempts"] == 1
    assert done["usage"]["wall_s"] > 0 and done["usage"]["peak_memory_mb"] > 0
    assert log.count("Ada") >= 3
    history = client.get(f"/api/v1/jobs/{job['id']}/events", headers=user.headers).json()
    assert [e["to_state"] for e in history] == ["queued", "staging", "running", "finishing", "succeeded"]
    outputs = client.get(f"/api/v1/jobs/{job['id']}/outputs", headers=user.headers).json()
    assert [o["path"] for o in outputs] == ["greeting.txt"]
    text = client.get(f"/api/v1/jobs/{job['id']}/outputs/greeting.txt", headers=user.headers).text
    assert text.count("Ada") == 3
    plain = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    assert "Ada" in plain


def test_spike_detection_on_an_uploaded_trace(client: TestClient, settings: Settings, user: Account) -> None:
    sample = Path(__import__("labcloud_demo").__file__).parent / "samples" / "trace.csv"
    put_file(client, user, "recordings/a.csv", sample.read_bytes())
    job = submit(
        client, user, {"app": "spikes", "params": {"threshold": 5}, "inputs": {"trace": "recordings/a.csv"}}
    )
    done = wait_for_end(client, job["id"], user.headers)
    assert done["state"] == "succeeded", client.get(
        f"/api/v1/jobs/{job['id']}/logs", headers=user.headers
    ).text
    assert done["params"]["threshold"] == 5 and done["params"]["polarity"] == "neg"  # defaults applied
    r = client.get(f"/api/v1/jobs/{job['id']}/outputs.zip", headers=user.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert set(archive.namelist()) == {"spikes.csv", "summary.json", "spikes.png"}
    assert archive.read("spikes.png")[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO(archive.read("spikes.csv").decode())))
    assert len(rows) == 30  # the sample trace holds 30 spikes


def test_a_sweeps_jobs_each_get_its_inputs_and_tags(
    client: TestClient, settings: Settings, user: Account
) -> None:
    sample = Path(__import__("labcloud_demo").__file__).parent / "samples" / "trace.csv"
    put_file(client, user, "recordings/a.csv", sample.read_bytes())
    body = {
        "app": "spikes",
        "grid": {"threshold": [5, 6, 7]},
        "inputs": {"trace": "recordings/a.csv"},
        "tags": {"study": "thresholds"},
    }
    r = client.post("/api/v1/sweeps", json=body, headers=user.headers)
    assert r.status_code == 201, r.text
    made = r.json()

    def ended() -> dict[str, Any] | None:
        got: dict[str, Any] = client.get(f"/api/v1/sweeps/{made['id']}", headers=user.headers).json()
        return got if got["state"] not in ("queued", "running") else None

    done = eventually(ended, 120, "the sweep to end")
    assert done["counts"] == {"succeeded": 3}, done
    jobs = client.get(f"/api/v1/sweeps/{made['id']}/jobs", headers=user.headers).json()["items"]
    assert sorted(j["params"]["threshold"] for j in jobs) == [5, 6, 7]
    for j in jobs:
        job = client.get(f"/api/v1/jobs/{j['id']}", headers=user.headers).json()
        assert job["tags"] == {"study": "thresholds"} and job["inputs"] == {"trace": "recordings/a.csv"}
        outputs = client.get(f"/api/v1/jobs/{j['id']}/outputs", headers=user.headers).json()
        assert "spikes.csv" in [o["path"] for o in outputs]
    tagged = client.get("/api/v1/jobs", params={"tag": "study=thresholds"}, headers=user.headers).json()
    assert len(tagged["items"]) == 3
    other = client.get("/api/v1/jobs", params={"tag": "study=other"}, headers=user.headers).json()
    assert other["items"] == []


def test_bad_submissions_name_what_is_wrong(client: TestClient, user: Account) -> None:
    r = client.post(
        "/api/v1/jobs",
        json={
            "app": "spikes",
            "params": {"threshold": 0, "polarity": "up"},
            "inputs": {"trace": "missing.csv"},
        },
        headers=user.headers,
    )
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["errors"]]
    assert ["body", "params", "threshold"] in locs and ["body", "params", "polarity"] in locs
    r = client.post(
        "/api/v1/jobs", json={"app": "spikes", "inputs": {"trace": "missing.csv"}}, headers=user.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "inputs", "trace"]
    r = client.post(
        "/api/v1/jobs", json={"app": "spikes", "inputs": {"trace": "../../etc/passwd"}}, headers=user.headers
    )
    assert r.status_code == 400 and r.json()["errors"][0]["loc"] == ["body", "inputs", "trace"]
    r = client.post("/api/v1/jobs", json={"app": "spikes", "version": "9.9"}, headers=user.headers)
    assert r.status_code == 404 and "1.0" in r.json()["detail"]
    r = client.post("/api/v1/jobs", json={"app": "hello", "resources": {"cpus": 4096}}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "resources", "cpus"]
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": "many"}}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "params", "times"]


def test_failures_carry_their_reason(client: TestClient, settings: Settings, user: Account) -> None:
    apps = settings.effective_apps_dir
    write_app(apps, "exits3", ["sh", "-c", "echo about to fail; exit 3"])
    write_app(apps, "sleeper", ["sleep", "30"], resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 1})
    write_app(
        apps,
        "hog",
        py("""
        import time
        blocks = []
        for _ in range(100):
            blocks.append(bytearray(20 * 2**20))
            time.sleep(0.02)
        time.sleep(5)
    """),
        resources={"cpus": 0.1, "memory_mb": 100, "timeout_s": 60},
    )
    write_app(
        apps, "missing", ["no-such-command-here"], resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60}
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    results = {}
    for name in ("exits3", "sleeper", "hog", "missing"):
        results[name] = submit(client, user, {"app": name})
    exits3 = wait_for_end(client, results["exits3"]["id"], user.headers)
    assert (exits3["state"], exits3["reason"], exits3["exit_code"]) == ("failed", "app_error", 3)
    sleeper = wait_for_end(client, results["sleeper"]["id"], user.headers)
    assert (sleeper["state"], sleeper["reason"]) == ("failed", "timeout")
    hog = wait_for_end(client, results["hog"]["id"], user.headers)
    assert (hog["state"], hog["reason"]) == ("failed", "out_of_memory")
    missing = wait_for_end(client, results["missing"]["id"], user.headers)
    assert (missing["state"], missing["reason"]) == ("failed", "system_error")
    log = client.get(f"/api/v1/jobs/{results['missing']['id']}/logs", headers=user.headers).text
    assert "no-such-command-here" in log


def test_a_job_that_cannot_start_here_ends_before_anything_is_made_for_it(
    client: TestClient, settings: Settings, user: Account
) -> None:
    """Two endings the runner decides before an attempt's folder exists: the job's input is gone when it
    starts (staging failed: a job queued before inputs were pinned at submit, so it reads its path when it
    starts), and this server may not run commands (the sandbox it must use does not work: the command's
    start failed). Each says why, in its message and its log."""
    apps = settings.effective_apps_dir
    gate = {"cpus": settings.local_cpus or 2, "memory_mb": 32, "timeout_s": 60}  # holds every CPU
    write_app(apps, "gate", ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"], resources=gate)
    small = {"cpus": 0.1, "memory_mb": 32, "timeout_s": 60}
    write_app(apps, "reader", ["cat", "{inputs.data}"], inputs={"data": {"type": "file"}}, resources=small)
    write_app(apps, "nap", ["true"], resources=small)
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    put_file(client, user, "in/a.txt", b"alpha")
    holder = submit(client, user, {"app": "gate"})["id"]

    def state(job_id: str) -> str:
        return str(client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["state"])

    eventually(lambda: state(holder) == "running", 30, "the gate job to run")
    unstaged = submit(client, user, {"app": "reader", "inputs": {"data": "in/a.txt"}})["id"]
    refused = submit(client, user, {"app": "nap"})["id"]
    with client.app.state.ctx.db.session() as session:  # type: ignore[attr-defined]
        session.execute(delete(JobInput).where(JobInput.job_id == uuid.UUID(unstaged)))
    assert client.delete("/api/v1/files/in/a.txt", headers=user.headers).status_code == 204
    executor = client.app.state.ctx.executors["local"]  # type: ignore[attr-defined]
    why = "the sandbox is required but does not work: (this test)"
    executor.sandboxing = Sandboxing(False, None, why, refuse=True)
    (settings.jobs_dir / holder / "attempt-1" / "work" / "open").touch()

    ends = {job_id: wait_for_end(client, job_id, user.headers) for job_id in (unstaged, refused)}
    logs = {job_id: client.get(f"/api/v1/jobs/{job_id}/logs", headers=user.headers).text for job_id in ends}
    assert (ends[unstaged]["state"], ends[unstaged]["reason"]) == ("failed", "staging_failed")
    assert ends[unstaged]["message"].startswith("the inputs could not be staged"), ends[unstaged]
    assert "the inputs could not be staged" in logs[unstaged]
    assert (ends[refused]["state"], ends[refused]["reason"]) == ("failed", "system_error")
    assert why in ends[refused]["message"] and why in logs[refused]
    for job_id in ends:
        assert not (settings.jobs_dir / job_id / "attempt-1").exists()


def test_cancel_running_and_queued_jobs(client: TestClient, settings: Settings, user: Account) -> None:
    write_app(
        settings.effective_apps_dir,
        "slow",
        [
            *py("""
        import pathlib, sys, time
        out = pathlib.Path(sys.argv[1]); out.mkdir(exist_ok=True)
        (out / "partial.txt").write_text("half done")
        print("started", flush=True)
        time.sleep(60)
    """),
            "{output}",
        ],
        resources={"cpus": settings.local_cpus or 2, "memory_mb": 128, "timeout_s": 120},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    first = submit(client, user, {"app": "slow"})
    second = submit(client, user, {"app": "slow"})  # no capacity left: stays queued
    follow_log(client, first["id"], user.headers, until="started")
    queued = client.get(f"/api/v1/jobs/{second['id']}", headers=user.headers).json()
    assert queued["state"] == "queued" and "capacity" in queued["message"]
    r = client.post(f"/api/v1/jobs/{second['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{second['id']}/cancel", headers=user.headers).status_code == 409
    r = client.post(f"/api/v1/jobs/{first['id']}/cancel", headers=user.headers)
    assert r.json()["state"] == "cancelling"
    done = wait_for_end(client, first["id"], user.headers)
    assert done["state"] == "cancelled"
    outputs = client.get(f"/api/v1/jobs/{first['id']}/outputs", headers=user.headers).json()
    assert [o["path"] for o in outputs] == ["partial.txt"]
    assert done["message"].startswith("cancelled; its one partial output file is kept"), done["message"]
    history = [
        e["to_state"] for e in client.get(f"/api/v1/jobs/{first['id']}/events", headers=user.headers).json()
    ]
    assert history[-2:] == ["cancelling", "cancelled"]


def test_a_cancel_while_the_executor_takes_the_job_ends_it(
    client: TestClient, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher has handed the job over (staging) and the runner's thread has not read it yet when the
    cancel lands: the job is cancelled, never left cancelling with no runner to end it."""
    from labcloud.execution.executors.local import LocalExecutor

    taken, release = threading.Event(), threading.Event()
    original = LocalExecutor._run

    def held(self: LocalExecutor, job_id: uuid.UUID) -> None:
        taken.set()
        assert release.wait(30)
        original(self, job_id)

    monkeypatch.setattr(LocalExecutor, "_run", held)
    job = submit(client, user, {"app": "hello", "params": {"times": 1}})
    assert taken.wait(30)
    r = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelling", r.text
    release.set()

    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
        return found if found["state"] in ("cancelled", "succeeded", "failed") else None

    done = eventually(ended, 20, "the cancelled job to end")
    assert done["state"] == "cancelled", done
    assert done["message"].startswith("cancelled"), done
    assert (
        "cancelled before it started"
        in client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    )


def test_a_crashed_runner_ends_its_job_even_when_the_first_writes_of_that_end_fail(
    client: TestClient, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner of a local job raised (a bug, the database gone): the job fails as a system error with
    the reason, never stays active until the next restart, even when recording that end fails at first
    (what broke the runner often breaks the next write too)."""
    from sqlalchemy.exc import OperationalError

    from labcloud.execution.executors import local
    from labcloud.services import lifecycle

    def crash(self: local.LocalExecutor, job_id: uuid.UUID) -> None:
        raise RuntimeError("the runner broke")

    tries: list[uuid.UUID] = []
    end_without_report = lifecycle.end_without_report

    def flaky_end(session: Any, job: Any, reason: Any, message: str) -> bool:
        tries.append(job.id)
        if len(tries) <= 2:
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        return end_without_report(session, job, reason, message)

    monkeypatch.setattr(local.LocalExecutor, "_run", crash)
    monkeypatch.setattr(local.lifecycle, "end_without_report", flaky_end)
    job = submit(client, user, {"app": "hello", "params": {"times": 1}})

    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()
        return found if found["state"] in ("cancelled", "succeeded", "failed") else None

    done = eventually(ended, 30, "the job whose runner crashed to end")
    assert done["state"] == "failed", done
    assert done["reason"] == "system_error", done
    assert "internal error: RuntimeError: the runner broke" in done["message"], done
    assert len(tries) >= 3 and set(tries) == {uuid.UUID(job["id"])}


def test_another_users_job_is_not_found(client: TestClient, user: Account, make_user: Any) -> None:
    job = submit(client, user, {"app": "hello", "params": {"times": 1}})
    other: Account = make_user()
    for method, suffix in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/logs"),
        ("GET", "/outputs"),
        ("GET", "/events"),
        ("POST", "/rerun"),
        ("DELETE", ""),
    ]:
        r = client.request(method, f"/api/v1/jobs/{job['id']}{suffix}", headers=other.headers)
        assert r.status_code == 404, (method, suffix)
    assert client.get("/api/v1/jobs", headers=other.headers).json()["items"] == []
    wait_for_end(client, job["id"], user.headers)


def test_list_filters_pages_rerun_and_delete(client: TestClient, user: Account) -> None:
    ids = [
        submit(client, user, {"app": "hello", "params": {"times": 1}, "tags": {"batch": str(i % 2)}})["id"]
        for i in range(5)
    ]
    for job_id in ids:
        wait_for_end(client, job_id, user.headers)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/jobs", params=params, headers=user.headers).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    tagged = client.get("/api/v1/jobs", params={"tag": "batch=1"}, headers=user.headers).json()["items"]
    assert [j["id"] for j in tagged] == [ids[3], ids[1]]
    by_state = client.get("/api/v1/jobs", params={"state": ["failed", "queued"]}, headers=user.headers).json()
    assert by_state["items"] == []
    assert len(client.get("/api/v1/jobs", params={"app": "hello"}, headers=user.headers).json()["items"]) == 5
    assert client.get("/api/v1/jobs", params={"state": "bogus"}, headers=user.headers).status_code == 422
    again = client.post(f"/api/v1/jobs/{ids[0]}/rerun", headers=user.headers).json()
    assert again["rerun_of"] == ids[0] and again["params"] == {"name": "world", "times": 1} | again["params"]
    wait_for_end(client, again["id"], user.headers)
    assert client.delete(f"/api/v1/jobs/{ids[0]}", headers=user.headers).status_code == 204
    assert client.get(f"/api/v1/jobs/{ids[0]}", headers=user.headers).status_code == 404


def test_running_job_cannot_be_deleted(client: TestClient, settings: Settings, user: Account) -> None:
    write_app(
        settings.effective_apps_dir,
        "waits",
        py("""
        print("up", flush=True)
        import time; time.sleep(60)
    """),
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    job = submit(client, user, {"app": "waits"})
    follow_log(client, job["id"], user.headers, until="up")
    r = client.delete(f"/api/v1/jobs/{job['id']}", headers=user.headers)
    assert r.status_code == 409 and "cancel" in r.json()["detail"]
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert wait_for_end(client, job["id"], user.headers)["state"] == "cancelled"


@pytest.mark.sandbox
def test_jobs_cannot_see_the_data_dir_or_other_jobs(
    client: TestClient, settings: Settings, user: Account
) -> None:
    first = submit(client, user, {"app": "hello", "params": {"times": 1}})
    wait_for_end(client, first["id"], user.headers)
    put_file(client, user, "secret.txt", b"top secret")
    secret_file = next(p for p in settings.files_dir.rglob("*") if p.is_file())  # its object in the store
    targets = [
        str(settings.home / "jobs" / first["id"] / "work" / "output" / "greeting.txt"),
        str(secret_file),
        str(settings.home / "secret_key"),
    ]
    if settings.is_sqlite:
        targets.append(settings.effective_database_url.removeprefix("sqlite:///"))
    outside = Path("/var/tmp") / f"labcloud-probe-{first['id']}"  # /tmp is private inside the sandbox
    write_app(
        settings.effective_apps_dir,
        "snoop",
        py(f"""
        import pathlib
        for t in {targets!r}:
            try:
                data = pathlib.Path(t).read_bytes()
                print("READ", t, len(data))
            except OSError as exc:
                print("DENIED", t, type(exc).__name__)
        for t in [{str(settings.home / "planted")!r}, {str(outside)!r}]:
            try:
                pathlib.Path(t).write_text("x")
            except OSError:
                print("NOWRITE", t)
    """),
        resources={"cpus": 0.1, "memory_mb": 128, "timeout_s": 60},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    snoop = submit(client, user, {"app": "snoop"})
    assert wait_for_end(client, snoop["id"], user.headers)["state"] == "succeeded"
    log = client.get(f"/api/v1/jobs/{snoop['id']}/logs", headers=user.headers).text
    printed = [line for line in log.splitlines() if not line.startswith("[labcloud]")]
    assert not [line for line in printed if line.startswith("READ")], log
    assert len([line for line in printed if line.startswith("DENIED")]) == len(targets)
    assert not (settings.home / "planted").exists()  # the data dir seen inside is an empty stand-in
    assert not outside.exists()
    assert f"NOWRITE {outside}" in printed  # the host outside the job folder is read-only


def test_folder_input_is_a_private_copy_and_outputs_land_in_the_space(
    storage_backend: str, client: TestClient, settings: Settings, user: Account
) -> None:
    put_file(client, user, "set/a.txt", b"alpha")
    put_file(client, user, "set/sub/b.txt", b"beta")
    write_app(
        settings.effective_apps_dir,
        "lister",
        [
            *py("""
        import os, pathlib, sys
        src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
        names = sorted(str(p.relative_to(src.parent)) for p in src.rglob("*") if p.is_file())
        (out / "listing.txt").write_text("\\n".join(names))
        (src / "a.txt").write_text("changed by the job")
        (out / "deep" / "er").mkdir(parents=True)
        (out / "deep" / "er" / "c.bin").write_bytes(bytes(range(256)))
        """),
            "{inputs.data}",
            "{output}",
        ],
        inputs={"data": {"description": "a folder", "type": "folder"}},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    job = submit(client, user, {"app": "lister", "inputs": {"data": "set"}})
    done = wait_for_end(client, job["id"], user.headers)
    assert done["state"] == "succeeded", done
    assert done["message"] == "2 output files"
    folder = f"jobs/{job['id']}"
    got = client.get(f"/api/v1/files/{folder}/listing.txt", headers=user.headers, follow_redirects=False)
    if got.status_code == 307:
        got = httpx.get(got.headers["location"])
    assert got.text == "set/a.txt\nset/sub/b.txt"
    listing = client.get("/api/v1/files", params={"prefix": folder}, headers=user.headers).json()["items"]
    assert [(e["path"], e["type"], e["job_id"]) for e in listing] == [
        (f"{folder}/deep", "folder", None),
        (f"{folder}/listing.txt", "file", job["id"]),
    ]
    outputs = client.get(f"/api/v1/jobs/{job['id']}/outputs", headers=user.headers).json()
    assert [(o["path"], o["size"]) for o in outputs] == [("deep/er/c.bin", 256), ("listing.txt", 23)]
    original = client.get("/api/v1/files/set/a.txt", headers=user.headers, follow_redirects=False)
    if original.status_code == 307:
        original = httpx.get(original.headers["location"])
    assert original.content == b"alpha"  # the job changed only its own copy
    assert not (settings.jobs_dir / job["id"] / "work").exists()  # staged copies are cleaned up


def test_a_submission_reports_every_problem_at_once(client: TestClient, user: Account) -> None:
    r = client.post(
        "/api/v1/jobs",
        json={
            "app": "spikes",
            "params": {"threshold": -3},
            "inputs": {"trace": "nowhere.csv"},
            "resources": {"cpus": 4096},
        },
        headers=user.headers,
    )
    assert r.status_code == 422 and r.json()["detail"] == "3 problems in the submission"
    locs = [e["loc"] for e in r.json()["errors"]]
    assert locs == [
        ["body", "params", "threshold"],
        ["body", "inputs", "trace"],
        ["body", "resources", "cpus"],
    ]


def test_the_log_reads_from_an_offset_and_streams_as_server_sent_events(
    client: TestClient, settings: Settings, user: Account
) -> None:
    job = submit(client, user, {"app": "hello", "params": {"times": 1}})
    assert wait_for_end(client, job["id"], user.headers)["state"] == "succeeded"
    (settings.jobs_dir / job["id"] / "job.log").write_bytes(b"one\ntwo\n\xff\npart")
    url = f"/api/v1/jobs/{job['id']}/logs"
    assert client.get(url, headers=user.headers).text == "one\ntwo\n\ufffd\npart"
    assert client.get(url, params={"offset": 4}, headers=user.headers).text == "two\n\ufffd\npart"
    assert client.get(url, params={"offset": 99}, headers=user.headers).text == ""
    with client.stream("GET", url, params={"follow": "true", "offset": 4}, headers=user.headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        streamed = r.read()
    # whole lines as one event (its id: the byte after them), a last partial line once the job has ended
    expected = (
        "event: log\ndata: two\ndata: \ufffd\nid: 10\n\n"
        "event: log\ndata: part\nid: 14\n\n"
        'event: end\ndata: {"state": "succeeded"}\n\n'
    )
    assert streamed == expected.encode()
    far = 2**62  # past the end, and past what a file system can seek to: nothing there
    assert client.get(url, params={"offset": far}, headers=user.headers).text == ""
    with client.stream("GET", url, params={"follow": "true", "offset": far}, headers=user.headers) as r:
        assert r.read() == b'event: end\ndata: {"state": "succeeded"}\n\n'
    for bad in (-1, far + 1):
        assert client.get(url, params={"offset": bad}, headers=user.headers).status_code == 422


def test_a_follower_waits_for_the_log_and_streams_what_is_appended_to_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following from before the job wrote anything (no log yet) to its end: lines as they are appended."""
    job_id = uuid.uuid4()
    path = job_logs.log_path(settings, job_id)
    state = {"now": JobState.QUEUED}
    monkeypatch.setattr(job_logs, "state_of", lambda _db, _job_id: state["now"])

    async def connected() -> bool:
        return False

    async def scenario() -> list[str]:
        events = job_logs.follow(None, settings, job_id, 0, JobState.QUEUED, connected)  # type: ignore[arg-type]
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(3 * job_logs.POLL_S)
        assert not first.done()  # nothing to say while there is no log
        path.parent.mkdir(parents=True)
        path.write_bytes(b"one\n")
        got = [await asyncio.wait_for(first, 5)]
        with open(path, "ab") as fh:
            fh.write(b"two\nthr")
        got.append(await asyncio.wait_for(anext(events), 5))
        with open(path, "ab") as fh:
            fh.write(b"ee")
        state["now"] = JobState.SUCCEEDED
        got += [event async for event in events]
        return got

    assert asyncio.run(scenario()) == [
        "event: log\ndata: one\nid: 4\n\n",
        "event: log\ndata: two\nid: 8\n\n",
        "event: log\ndata: three\nid: 13\n\n",
        'event: end\ndata: {"state": "succeeded"}\n\n',
    ]


def test_each_users_jobs_are_numbered_in_turn_even_when_submitted_at_once(
    client: TestClient, user: Account, make_user: Any
) -> None:
    other: Account = make_user()
    first = submit(client, user, {"app": "hello", "params": {"times": 1}})
    assert first["run_number"] == 1
    mine = [submit(client, user, {"app": "hello", "params": {"times": 1}})["run_number"] for _ in range(2)]
    theirs = [submit(client, other, {"app": "hello", "params": {"times": 1}})["run_number"] for _ in range(2)]
    assert mine == [2, 3] and theirs == [1, 2]  # per user

    def at_once(_: int) -> int:
        r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=user.headers)
        assert r.status_code == 201, r.text
        number: int = r.json()["run_number"]
        return number

    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(at_once, range(16)))
    assert sorted(numbers) == list(range(4, 20))  # none twice, none skipped
    listed = client.get("/api/v1/jobs?limit=100", headers=user.headers).json()["items"]
    assert sorted(j["run_number"] for j in listed) == list(range(1, 20))
