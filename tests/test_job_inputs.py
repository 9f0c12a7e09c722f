"""A job keeps the exact content of its inputs: what it stages, what its page links and what a rerun takes,
whatever later happens to the files at those paths; and the store keeps that content while the job exists."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import Account
from jobs_helpers import wait_for_end, write_app
from labcloud.db.models import JobInput
from labcloud.services import file_store
from labcloud.settings import Settings
from live_server import eventually
from test_project_files import add, project
from test_web import browser_login, csrf_of

READER = ["cat", "{inputs.data}"]
# every file of a folder input, as name=content lines
LISTER = ["sh", "-c", 'for f in "$0"/*; do echo "$(basename "$f")=$(cat "$f")"; done', "{inputs.data}"]
SMALL = {"cpus": 0.1, "memory_mb": 32, "timeout_s": 60}


def _apps(client: TestClient, settings: Settings) -> None:
    apps = settings.effective_apps_dir
    write_app(apps, "reader", READER, inputs={"data": {"type": "file"}}, resources=SMALL)
    write_app(apps, "lister", LISTER, inputs={"data": {"type": "folder"}}, resources=SMALL)
    gate = {"cpus": settings.local_cpus or 2, "memory_mb": 32, "timeout_s": 60}  # holds every CPU
    write_app(apps, "gate", ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"], resources=gate)
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]


def _put(client: TestClient, who: Account, path: str, data: bytes) -> None:
    r = client.put(f"/api/v1/files/{path}", content=data, headers=who.headers)
    assert r.status_code == 201, r.text


def _submit(client: TestClient, who: Account, body: dict[str, Any]) -> str:
    r = client.post("/api/v1/jobs", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _log(client: TestClient, who: Account, job_id: str) -> str:
    job = wait_for_end(client, job_id, who.headers)
    assert job["state"] == "succeeded", job
    return client.get(f"/api/v1/jobs/{job_id}/logs", headers=who.headers).text


def _inputs(client: TestClient, who: Account, job_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/jobs/{job_id}/inputs", headers=who.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()
    return items


def _content(client: TestClient, who: Account, url: str) -> bytes:
    r = client.get(url, headers=who.headers)
    assert r.status_code == 200, r.text
    return r.content


def test_a_job_links_and_reruns_the_content_it_read_after_its_file_changes_or_goes(
    client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings)
    _put(client, user, "in/a.txt", b"first")
    job_id = _submit(client, user, {"app": "reader", "inputs": {"data": "in/a.txt"}})
    assert "first" in _log(client, user, job_id)
    [pinned] = _inputs(client, user, job_id)
    assert (pinned["slot"], pinned["path"], pinned["source"], pinned["now"]) == (
        "data",
        "a.txt",
        "in/a.txt",
        "same",
    )
    assert pinned["sha256"] == hashlib.sha256(b"first").hexdigest() and pinned["size"] == 5

    _put(client, user, "in/a.txt", b"second")  # the same name uploaded over
    [pinned] = _inputs(client, user, job_id)
    assert pinned["now"] == "changed"
    assert _content(client, user, pinned["url"]) == b"first"

    again = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=user.headers)
    assert again.status_code == 201, again.text
    assert "first" in _log(client, user, again.json()["id"])  # a rerun reads what the job read
    assert again.json()["rerun_of"] == job_id
    current = client.post(f"/api/v1/jobs/{job_id}/rerun", json={"inputs": "current"}, headers=user.headers)
    assert current.status_code == 201, current.text
    assert "second" in _log(client, user, current.json()["id"])

    assert client.post(
        "/api/v1/files:move", json={"from": "in", "to": "moved"}, headers=user.headers
    ).is_success
    [pinned] = _inputs(client, user, job_id)
    assert pinned["now"] == "gone"
    assert _content(client, user, pinned["url"]) == b"first"  # the link outlives the path
    assert client.delete("/api/v1/files/moved", headers=user.headers).status_code == 204
    assert _content(client, user, pinned["url"]) == b"first"

    gone = client.post(f"/api/v1/jobs/{job_id}/rerun", json={"inputs": "current"}, headers=user.headers)
    assert gone.status_code == 422, gone.text
    assert gone.json()["errors"][0]["loc"][-1] == "data"
    original = client.post(f"/api/v1/jobs/{job_id}/rerun", json={"inputs": "original"}, headers=user.headers)
    assert original.status_code == 201, original.text
    assert "first" in _log(client, user, original.json()["id"])


def test_a_queued_job_runs_what_was_submitted_not_what_replaced_it(
    client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings)
    _put(client, user, "rec/a.txt", b"alpha")
    _put(client, user, "rec/b.txt", b"beta")
    _put(client, user, "one.txt", b"original")
    holder = _submit(client, user, {"app": "gate"})

    def state(job_id: str) -> str:
        return str(client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["state"])

    eventually(lambda: state(holder) == "running", 30, "the gate job to run")
    single = _submit(client, user, {"app": "reader", "inputs": {"data": "one.txt"}})
    folder = _submit(client, user, {"app": "lister", "inputs": {"data": "rec"}})
    assert state(single) == state(folder) == "queued"
    _put(client, user, "one.txt", b"replaced")
    _put(client, user, "rec/a.txt", b"ALPHA")
    _put(client, user, "rec/c.txt", b"gamma")  # added after the submit: not the job's
    assert client.delete("/api/v1/files/rec/b.txt", headers=user.headers).status_code == 204
    (settings.jobs_dir / holder / "attempt-1" / "work" / "open").touch()

    assert "original" in _log(client, user, single)
    lines = _log(client, user, folder).split()
    assert "a.txt=alpha" in lines and "b.txt=beta" in lines and not any(x.startswith("c.txt") for x in lines)
    held = {i["path"]: i["now"] for i in _inputs(client, user, folder)}
    assert held == {"rec/a.txt": "changed", "rec/b.txt": "gone"}


def test_the_store_keeps_a_jobs_input_content_until_the_job_is_deleted(
    client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings)
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    _put(client, user, "kept.txt", b"keep me")
    job_id = _submit(client, user, {"app": "reader", "inputs": {"data": "kept.txt"}})
    _log(client, user, job_id)
    with ctx.db.session() as session:
        key = session.scalar(select(JobInput.blob_key).where(JobInput.job_id == uuid.UUID(job_id)))
    assert key is not None and ctx.storage.exists(key)
    assert client.delete("/api/v1/files/kept.txt", headers=user.headers).status_code == 204
    assert ctx.storage.exists(key)  # the file is gone; the job still holds its content
    file_store.sweep_orphans(ctx.db, ctx.storage, older_than=timedelta(0))
    assert ctx.storage.exists(key)

    assert client.delete(f"/api/v1/jobs/{job_id}", headers=user.headers).status_code == 204
    assert ctx.storage.exists(key)  # (housekeeping sweeps it, not the delete)
    file_store.sweep_orphans(ctx.db, ctx.storage, older_than=timedelta(0))
    assert not ctx.storage.exists(key)


def test_an_objects_second_holder_keeps_it_when_the_first_lets_go(
    client: TestClient, settings: Settings, user: Account
) -> None:
    """A file uploaded over while two jobs hold its old content: deleting one job leaves the other's."""
    _apps(client, settings)
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    _put(client, user, "x.txt", b"old")
    first = _submit(client, user, {"app": "reader", "inputs": {"data": "x.txt"}})
    second = _submit(client, user, {"app": "reader", "inputs": {"data": "x.txt"}})
    _log(client, user, first), _log(client, user, second)
    _put(client, user, "x.txt", b"new")
    assert client.delete(f"/api/v1/jobs/{first}", headers=user.headers).status_code == 204
    file_store.sweep_orphans(ctx.db, ctx.storage, older_than=timedelta(0))
    [pinned] = _inputs(client, user, second)
    assert _content(client, user, pinned["url"]) == b"old"


def test_only_those_who_may_read_an_inputs_source_get_its_content(
    client: TestClient, settings: Settings, make_user: Any
) -> None:
    """A project job's input from its submitter's own files is the submitter's: other members see that
    it was there (path, size, checksum) but get no content, and cannot rerun it with that content."""
    _apps(client, settings)
    owner, member = make_user(), make_user()
    project(client, owner, "vision")
    add(client, owner, "vision", member.email, "member")
    _put(client, owner, "private.txt", b"mine alone")
    _put(client, owner, "projects/vision/shared.txt", b"ours")
    private = _submit(
        client, owner, {"app": "reader", "project": "vision", "inputs": {"data": "private.txt"}}
    )
    shared = _submit(
        client,
        owner,
        {"app": "reader", "project": "vision", "inputs": {"data": "projects/vision/shared.txt"}},
    )
    _log(client, owner, private), _log(client, owner, shared)

    [seen] = _inputs(client, member, private)
    assert seen["url"] is None and seen["sha256"] == hashlib.sha256(b"mine alone").hexdigest()
    assert (
        client.get(f"/api/v1/jobs/{private}/inputs/data/private.txt", headers=member.headers).status_code
        == 404
    )
    refused = client.post(f"/api/v1/jobs/{private}/rerun", headers=member.headers)
    assert refused.status_code == 422 and "another user's own files" in refused.text, refused.text

    [ours] = _inputs(client, member, shared)
    assert ours["source"] == "projects/vision/shared.txt"
    assert _content(client, member, ours["url"]) == b"ours"
    rerun = client.post(f"/api/v1/jobs/{shared}/rerun", headers=member.headers)
    assert rerun.status_code == 201, rerun.text
    assert "ours" in _log(client, member, rerun.json()["id"])

    stranger = make_user()
    assert client.get(f"/api/v1/jobs/{shared}/inputs", headers=stranger.headers).status_code == 404


def test_the_job_page_links_the_content_and_offers_both_reruns(
    app: Any, client: TestClient, settings: Settings, user: Account
) -> None:
    _apps(client, settings)
    _put(client, user, "page.txt", b"as read")
    job_id = _submit(client, user, {"app": "reader", "inputs": {"data": "page.txt"}})
    _log(client, user, job_id)
    browser = browser_login(app, user.email, user.password)
    page = browser.get(f"/jobs/{job_id}").text
    assert f'href="/jobs/{job_id}/inputs/data/page.txt"' in page
    assert "changed since" not in page and 'id="rerun-current-inputs"' not in page

    _put(client, user, "page.txt", b"edited")
    page = browser.get(f"/jobs/{job_id}").text
    assert "changed since" in page and 'id="rerun-current-inputs"' in page
    r = browser.post(
        f"/jobs/{job_id}/rerun",
        data={"csrf_token": csrf_of(page), "inputs": "current"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    new_id = r.headers["location"].rsplit("/", 1)[-1]
    assert "edited" in _log(client, user, new_id)
