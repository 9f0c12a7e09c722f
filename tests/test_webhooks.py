"""Webhooks: signed deliveries of job events to a real HTTP receiver, retried until it answers, paused
when they keep failing, never to private addresses unless allowed, and sent after a restart when the
server stopped between the commit and the send."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from conftest import Account, backend
from jobs_helpers import wait_for_end
from labcloud.api.app import create_app
from labcloud.db.engine import Database
from labcloud.db.models import Event, WebhookSubscription
from labcloud.settings import Settings
from live_server import eventually, login_headers, server_env, start_server, stop_server
from mail_helpers import mail_parts
from webhook_helpers import Receiver


def subscribe(client: TestClient, who: Account, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    r = client.post("/api/v1/webhooks", json={"url": url, "events": events, **extra}, headers=who.headers)
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


def deliveries(client: TestClient, who: Account, hook: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries", headers=who.headers
    ).json()
    return found


def test_a_job_end_is_delivered_signed_and_retried_until_the_receiver_answers(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    hook = subscribe(client, user, receiver.url, ["job.succeeded", "job.failed"])
    assert (
        hook["secret"].startswith("whsec_")
        and "secret" not in client.get(f"/api/v1/webhooks/{hook['id']}", headers=user.headers).json()
    )
    receiver.answers = [500, 503, 500]  # three failures, then 204
    job = client.post("/api/v1/jobs", json={"app": "fails"}, headers=user.headers).json()
    assert wait_for_end(client, job["id"], user.headers)["state"] == "failed"
    done = eventually(
        lambda: (d := deliveries(client, user, hook)) and d[0]["state"] == "delivered" and d,
        30,
        "the delivery",
    )
    [delivery] = done
    assert [t["status"] for t in delivery["tries"]] == [500, 503, 500, 204] and delivery["attempts"] == 4
    assert len(receiver.seen) == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.seen}
    assert ids == {delivery["event_id"]}  # the same event each time: receivers drop repeats by it
    for headers, body in receiver.seen:  # each one verifies with the subscription's secret
        Webhook(hook["secret"]).verify(body, headers)
    event = receiver.bodies()[-1]
    assert event["type"] == "job.failed" and event["data"]["job"]["id"] == job["id"]
    assert event["data"]["job"]["reason"] == "app_error" and event["data"]["job"]["exit_code"] == 3
    # a job.succeeded too; events it did not ask for are not sent; a test; a redelivery
    quick = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    wait_for_end(client, quick["id"], user.headers)
    eventually(lambda: len(receiver.seen) == 5, 30, "the second event")
    assert receiver.bodies()[-1]["type"] == "job.succeeded"
    r = client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=user.headers)
    assert r.status_code == 202
    eventually(lambda: len(receiver.seen) == 6, 30, "the test event")
    assert receiver.bodies()[-1]["type"] == "webhook.test"
    r = client.post(
        f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver", headers=user.headers
    )
    assert r.status_code == 200, r.text
    eventually(lambda: len(receiver.seen) == 7, 30, "the redelivery")
    assert receiver.seen[-1][0]["webhook-id"] == delivery["event_id"]
    # another user's webhook is not found
    other = make_user()
    assert client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=other.headers).status_code == 404


def test_a_webhook_that_keeps_failing_is_paused_and_redirects_are_not_followed(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    hooked.webhook_max_attempts = 2
    hooked.webhook_pause_after = 2
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    hook = subscribe(client, user, receiver.url, ["job.succeeded"])
    receiver.answers = [302, 302, 500, 500]  # a redirect (to loopback) is an answer, not followed
    for _ in range(2):
        job = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
        wait_for_end(client, job["id"], user.headers)
    paused = eventually(
        lambda: (
            (w := client.get(f"/api/v1/webhooks/{hook['id']}", headers=user.headers).json())["state"]
            == "paused"
            and w
        ),
        30,
        "the webhook to pause",
    )
    assert "2 events in a row" in paused["paused_reason"]
    tries = [t["status"] for d in deliveries(client, user, hook) for t in d["tries"]]
    assert sorted(tries) == [302, 302, 500, 500]  # two tries of each: a redirect counts as a failure
    assert len(receiver.seen) == 4  # and nothing went to where the redirect pointed
    job = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)
    r = client.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": True}, headers=user.headers)
    assert r.status_code == 200 and r.json()["state"] == "active"
    assert len(receiver.seen) == 4  # a paused webhook heard nothing


@pytest.mark.usefixtures("mailing")  # (before the server starts: it sends mail)
def test_the_owner_of_a_paused_webhook_is_told_by_mail(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    """One mail to the owner (a real SMTP server), naming the URL, why, and how to resume; the webhooks
    themselves hear nothing of it."""
    box, _ = request.getfixturevalue("inbox")
    hooked.webhook_max_attempts = 1
    hooked.webhook_pause_after = 1
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    assert client.patch("/api/v1/me", json={"notify_email": "never"}, headers=user.headers).status_code == 200
    hook = subscribe(client, user, receiver.url, ["job.succeeded"])
    listener = Receiver()  # another webhook of the same user, which keeps working
    subscribe(client, user, listener.url, ["job.succeeded"])
    receiver.answers = [500]
    job = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)
    eventually(lambda: len(box.messages) == 1, 30, "the mail about the pause")
    mail = box.messages[0]
    assert mail["To"] == user.email and mail["Subject"] == "labcloud: your webhook was paused"
    parts = mail_parts(mail)
    assert set(parts) == {"text/plain", "text/html"}
    for body in parts.values():
        assert receiver.url in body and "1 events in a row" in body and "HTTP 500" in body
        assert f"PATCH /api/v1/webhooks/{hook['id']}" in body
        assert f"/account/webhooks/{hook['id']}" in body  # its page, with a resume button
    assert client.get(f"/api/v1/webhooks/{hook['id']}", headers=user.headers).json()["state"] == "paused"
    assert [b["type"] for b in listener.bodies()] == ["job.succeeded"]
    listener.server.shutdown()


def test_every_state_change_of_a_job_is_delivered_and_written_only_when_asked_for(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue("client")
    user, quiet = make_user(), make_user()
    subscribe(client, user, receiver.url, ["job.state_changed"])
    job = client.post("/api/v1/jobs", json={"app": "fails"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)

    def whole_chain() -> bool:  # deliveries run in parallel: wait until every change has arrived
        got = [b["data"] for b in sorted(receiver.bodies(), key=lambda b: b["timestamp"])]
        linked = all(a["to"] == b["from"] for a, b in itertools.pairwise(got))
        return bool(got) and got[0]["from"] == "queued" and got[-1]["to"] == "failed" and linked

    eventually(whole_chain, 30, "every change up to failed")
    changes = [b["data"] for b in sorted(receiver.bodies(), key=lambda b: b["timestamp"])]
    assert {b["type"] for b in receiver.bodies()} == {"job.state_changed"}  # (not the job.failed)
    assert all(c["job"]["id"] == job["id"] for c in changes)
    assert len(changes) >= 2 and changes[-1]["reason"] == "app_error", changes
    assert [c["from"] for c in changes[1:]] == [c["to"] for c in changes[:-1]]  # each change, in turn
    # a user nobody listens to: no event row is written for their job's changes
    other = client.post("/api/v1/jobs", json={"app": "quick"}, headers=quiet.headers).json()
    wait_for_end(client, other["id"], quiet.headers)
    db = Database(hooked)
    with db.session() as session:
        kinds = [e.kind for e in session.scalars(select(Event).where(Event.user_id == quiet.id))]
    db.dispose()
    assert kinds == ["job.succeeded"]

    # Whom nobody listens to is remembered for a moment, but a subscription made now is heard at once.
    later = Receiver()
    subscribe(client, quiet, later.url, ["job.state_changed"])
    third = client.post("/api/v1/jobs", json={"app": "quick"}, headers=quiet.headers).json()
    wait_for_end(client, third["id"], quiet.headers)

    def first_and_last() -> bool:  # (deliveries run in parallel: in any order)
        changes = [b["data"] for b in later.bodies()]
        return any(c["to"] == "succeeded" for c in changes) and any(c["from"] == "queued" for c in changes)

    eventually(first_and_last, 30, "the new subscriber's events, from the job's very first change")
    later.server.shutdown()


def test_a_quota_crossing_80_percent_and_reaching_its_limit_is_told_once_each(
    hooked: Settings, receiver: Receiver, make_user: Any, admin: Account, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue("client")
    manager = make_user()
    r = client.post("/api/v1/projects", json={"name": "Budget", "slug": "budget"}, headers=manager.headers)
    assert r.status_code == 201, r.text
    r = client.put(
        "/api/v1/projects/budget/quotas/jobs_per_day",
        json={"limit": 10, "period": "daily"},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    subscribe(client, manager, receiver.url, ["quota.warning"], project="budget")
    codes = [
        client.post(
            "/api/v1/jobs", json={"app": "quick", "project": "budget"}, headers=manager.headers
        ).status_code
        for _ in range(11)
    ]
    assert codes == [201] * 10 + [409]
    eventually(lambda: len(receiver.seen) >= 2, 30, "the warnings")
    time.sleep(1.5)  # (time for any repeat to arrive)
    quotas = sorted((b["data"]["quota"] for b in receiver.bodies()), key=lambda q: q["used"])
    assert {b["type"] for b in receiver.bodies()} == {"quota.warning"}
    assert [(q["level"], q["used"]) for q in quotas] == [("warning", 8), ("exceeded", 10)]  # once each
    assert all(
        q["project"] == "budget" and q["resource"] == "jobs_per_day" and q["limit"] == 10 for q in quotas
    )
    assert all(q["held"] == 0 for q in quotas)


def test_a_file_put_into_a_space_is_told_and_a_jobs_outputs_are_not(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    import hashlib

    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    subscribe(client, user, receiver.url, ["file.uploaded", "job.succeeded"])
    data = b"calibration,1\n"
    r = client.put("/api/v1/files/runs/a.csv", content=data, headers=user.headers)
    assert r.status_code in (200, 201), r.text
    eventually(lambda: len(receiver.seen) >= 1, 30, "the upload's event")
    [event] = receiver.bodies()
    assert event["type"] == "file.uploaded"
    told = event["data"]["file"]
    assert told["path"] == "runs/a.csv" and told["size"] == len(data), told
    assert told["sha256"] == hashlib.sha256(data).hexdigest() and told["user"] == str(user.id)
    assert told["project"]  # (the user's personal project)
    job = client.post(
        "/api/v1/jobs", json={"app": "hello", "params": {"name": "Ada", "times": 1}}, headers=user.headers
    ).json()
    assert wait_for_end(client, job["id"], user.headers)["state"] == "succeeded"
    outputs = client.get(f"/api/v1/jobs/{job['id']}/outputs", headers=user.headers).json()
    assert [o["path"] for o in outputs] == ["greeting.txt"]
    eventually(lambda: len(receiver.seen) >= 2, 30, "the job's end")
    time.sleep(1.0)  # (time for an event of its outputs, were there one)
    assert [b["type"] for b in receiver.bodies()] == ["file.uploaded", "job.succeeded"]


def test_a_chat_channel_hears_of_job_ends_as_the_preference_says_and_is_never_shown(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    """An Apprise json:// channel posting to the real receiver (no mail server: chat alone)."""
    hooked.base_url = "https://lab.example.org"
    hooked.mail_digest_window_s = 0.2
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    channel = receiver.url.replace("http://", "json://")
    r = client.patch(
        "/api/v1/me", json={"notify_apprise_url": channel, "notify_email": "failure"}, headers=user.headers
    )
    assert r.status_code == 200 and channel not in r.text, r.text
    shown = client.get("/api/v1/me/chat", headers=user.headers)
    assert (
        shown.json() == {"scheme": "json"}
        and channel not in client.get("/api/v1/me", headers=user.headers).text
    )
    quiet = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()  # not told
    job = client.post(
        "/api/v1/jobs", json={"app": "fails", "name": "calibration"}, headers=user.headers
    ).json()
    for one in (quiet, job):
        wait_for_end(client, one["id"], user.headers)
    eventually(lambda: len(receiver.seen) >= 1, 30, "the chat message")
    time.sleep(1.0)  # (time for a message of the success, were there one)
    [message] = receiver.bodies()
    text = json.dumps(message)
    assert "calibration" in text and "failed" in text and "app_error" in text
    assert f"https://lab.example.org/jobs/{job['id']}" in text and quiet["id"] not in text
    r = client.patch("/api/v1/me", json={"notify_apprise_url": ""}, headers=user.headers)
    assert r.status_code == 200 and client.get("/api/v1/me/chat", headers=user.headers).json() == {
        "scheme": None
    }


def test_a_chat_message_that_fails_is_tried_again_and_the_mail_is_not_sent_twice(
    hooked: Settings,
    mailing: Settings,
    inbox: tuple[Any, int],
    receiver: Receiver,
    make_user: Any,
    request: pytest.FixtureRequest,
) -> None:
    hooked.mail_retry_s = 0.2
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    channel = receiver.url.replace("http://", "json://")
    r = client.patch("/api/v1/me", json={"notify_apprise_url": channel}, headers=user.headers)
    assert r.status_code == 200, r.text
    receiver.answers = [500, 502, 503]  # the chat service is down for three tries
    job = client.post("/api/v1/jobs", json={"app": "fails", "name": "retried"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)
    eventually(lambda: len(receiver.seen) == 4, 30, "the fourth try of the chat message")
    time.sleep(1.5)  # (several of the sender's rounds: a delivered message is not sent again)
    assert len(receiver.seen) == 4
    assert all("retried" in json.dumps(b) and job["id"] in json.dumps(b) for b in receiver.bodies())
    assert len(inbox[0].messages) == 1  # the mail went once, before the chat tries
    db = Database(hooked)
    with db.session() as session:
        left = list(session.scalars(select(Event).where(Event.user_id == user.id, Event.mailed.is_(False))))
    db.dispose()
    assert left == []  # nothing waits in the outbox any more


@pytest.mark.parametrize(
    "channel",
    ["json://127.0.0.1:9/hook", "form://localhost/hook", "json://10.1.2.3/x", "nonsense://what", "not a url"],
)
def test_chat_channels_to_private_addresses_or_unknown_schemes_are_refused(
    client: TestClient, user: Account, channel: str
) -> None:
    r = client.patch("/api/v1/me", json={"notify_apprise_url": channel}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "notify_apprise_url"], r.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:9/hook",  # a name that resolves to loopback
        "http://10.1.2.3/hook",
        "ftp://example.org/hook",
        "http://user:pass@example.org/hook",
    ],
)
def test_webhooks_to_private_addresses_are_refused(client: TestClient, user: Account, url: str) -> None:
    r = client.post("/api/v1/webhooks", json={"url": url, "events": ["job.succeeded"]}, headers=user.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "url"], r.text


def test_an_event_committed_before_a_stop_is_sent_after_the_restart(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    hook = subscribe(client, user, receiver.url, ["job.succeeded"])
    receiver.server.shutdown()  # nobody answers while the job ends: the delivery waits in the database
    receiver.server.server_close()
    job = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)
    eventually(
        lambda: deliveries(client, user, hook) and deliveries(client, user, hook)[0]["attempts"] >= 1,
        30,
        "a try",
    )
    client.__exit__(None, None, None)  # the server stops with the delivery unsent
    again = Receiver()  # (on another port: the webhook is pointed at it while no server runs)
    db = Database(hooked)
    with db.session() as session:
        row = session.get(WebhookSubscription, uuid.UUID(hook["id"]))
        assert row is not None
        row.url = again.url
    db.dispose()
    with TestClient(create_app(hooked)):
        eventually(lambda: len(again.seen) == 1, 30, "the delivery after the restart")
        assert json.loads(again.seen[0][1])["data"]["job"]["id"] == job["id"]
    again.server.shutdown()


def test_a_server_killed_while_it_sends_sends_the_event_again_after_its_restart(
    hooked: Settings, receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    """kill -9 of a real ``labcloud serve`` after the job's end was committed and while its event was on
    the wire, unanswered: the restarted server sends it again, with the same id (at least once)."""
    admin = ("hook-admin@example.org", "hook-admin-password")
    env = server_env(
        hooked.home,
        admin,
        database_url if backend() == "postgresql" else None,
        webhook_allow_private="true",
        webhook_retry_s="0.1",
        webhook_timeout_s="2",
    )
    url, proc = start_server(env, tmp_path / "first.log")
    try:
        headers = login_headers(url, *admin)
        r = httpx.post(
            f"{url}/api/v1/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]}, headers=headers
        )
        assert r.status_code == 201, r.text
        hook = r.json()
        receiver.stall = 1  # the first try gets no answer: the server is killed while it waits
        job = httpx.post(f"{url}/api/v1/jobs", json={"app": "quick"}, headers=headers).json()
        eventually(lambda: receiver.seen, 60, "the first try to reach the receiver")
        # a receiver that does not answer holds no job back
        other = httpx.post(f"{url}/api/v1/jobs", json={"app": "fails"}, headers=headers).json()
        eventually(
            lambda: (
                httpx.get(f"{url}/api/v1/jobs/{other['id']}", headers=headers).json()["state"] == "failed"
            ),
            30,
            "a job to end while the receiver stalls",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            stop_server(proc)
    receiver.release.set()
    url, proc = start_server(env, tmp_path / "second.log")
    try:
        eventually(lambda: len(receiver.seen) == 2, 60, "the delivery after the restart")
        assert {h["webhook-id"] for h, _ in receiver.seen} == {receiver.seen[0][0]["webhook-id"]}
        assert [b["data"]["job"]["id"] for b in receiver.bodies()] == [job["id"]] * 2
        for seen_headers, body in receiver.seen:
            Webhook(hook["secret"]).verify(body, seen_headers)
        headers = login_headers(url, *admin)
        [delivery] = eventually(
            lambda: [
                d
                for d in httpx.get(f"{url}/api/v1/webhooks/{hook['id']}/deliveries", headers=headers).json()
                if d["state"] == "delivered"
            ],
            30,
            "the delivery to be recorded",
        )
        assert delivery["attempts"] == 1  # the killed try left no answer behind, the second did
        time.sleep(1.5)  # (several rounds of the sender)
        assert len(receiver.seen) == 2  # once delivered, never again
    finally:
        stop_server(proc)


def test_a_projects_webhook_hears_its_members_jobs(
    hooked: Settings, receiver: Receiver, make_user: Any, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue("client")
    manager, member, outsider = make_user(), make_user(), make_user()
    assert (
        client.post(
            "/api/v1/projects", json={"name": "Hooks", "slug": "hooks"}, headers=manager.headers
        ).status_code
        == 201
    )
    client.post(
        "/api/v1/projects/hooks/members",
        json={"email": member.email, "role": "member"},
        headers=manager.headers,
    )
    r = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url, "events": ["job.succeeded"], "project": "hooks"},
        headers=member.headers,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "project"]  # members do not
    r = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url, "events": ["job.succeeded"], "project": "hooks"},
        headers=outsider.headers,
    )
    assert r.status_code == 422
    hook = subscribe(client, manager, receiver.url, ["job.succeeded"], project="hooks")
    assert hook["project"] == "hooks"
    inside = client.post(
        "/api/v1/jobs", json={"app": "quick", "project": "hooks"}, headers=member.headers
    ).json()
    outside = client.post("/api/v1/jobs", json={"app": "quick"}, headers=member.headers).json()
    for job in (inside, outside):
        wait_for_end(client, job["id"], member.headers)
    eventually(lambda: len(receiver.seen) >= 1, 30, "the project's event")
    assert [b["data"]["job"]["id"] for b in receiver.bodies()] == [inside["id"]]
