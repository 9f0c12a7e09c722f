"""E-mail when jobs end, through a real SMTP server the test starts (aiosmtpd): with STARTTLS and a login,
or TLS from the first byte; each user's preference and a job's own; several ends in a short window make
one digest; a server that is down gets the mail once it is back."""

from __future__ import annotations

from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from jobs_helpers import wait_for_end, write_app
from labcloud.api.app import create_app
from labcloud.settings import Settings
from live_server import eventually
from mail_helpers import Inbox, free_port, mail_parts, tls_context
from test_web import csrf_of


def test_a_job_end_is_mailed_over_starttls_with_a_login_as_each_preference_says(
    mailing: Settings, inbox: tuple[Inbox, int], make_user: Any, request: pytest.FixtureRequest
) -> None:
    box, _ = inbox
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    job = client.post(
        "/api/v1/jobs", json={"app": "fails", "name": "calibration"}, headers=user.headers
    ).json()
    wait_for_end(client, job["id"], user.headers)
    eventually(lambda: len(box.messages) == 1, 30, "the mail")
    mail = box.messages[0]
    assert mail["To"] == user.email and mail["From"] == "labcloud <noreply@lab.example.org>"
    assert mail["Subject"] == "labcloud: calibration failed"
    parts = mail_parts(mail)
    assert set(parts) == {"text/plain", "text/html"}
    link = f"https://lab.example.org/jobs/{job['id']}"
    for body in parts.values():
        assert link in body and "app_error" in body and "fails" in body
    # "failure": a success is not mailed, a failure is; a job's own "never" wins
    r = client.patch("/api/v1/me", json={"notify_email": "failure"}, headers=user.headers)
    assert r.status_code == 200 and r.json()["notify_email"] == "failure", r.text
    quiet = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    hushed = client.post(
        "/api/v1/jobs", json={"app": "fails", "notify": "never"}, headers=user.headers
    ).json()
    told = client.post("/api/v1/jobs", json={"app": "fails", "name": "told"}, headers=user.headers).json()
    for one in (quiet, hushed, told):
        wait_for_end(client, one["id"], user.headers)
    eventually(lambda: len(box.messages) == 2, 30, "the second mail")
    assert box.messages[1]["Subject"] == "labcloud: told failed"
    assert hushed["id"] not in str(mail_parts(box.messages[1])) and quiet["id"] not in str(
        mail_parts(box.messages[1])
    )


def test_jobs_that_end_together_make_one_digest(
    mailing: Settings, inbox: tuple[Inbox, int], make_user: Any, request: pytest.FixtureRequest
) -> None:
    mailing.mail_digest_window_s = 3.0
    box, _ = inbox
    with TestClient(create_app(mailing)) as client:
        from conftest import bearer, login

        admin = bearer(
            login(client, mailing.initial_admin_email, mailing.initial_admin_password.get_secret_value())
        )
        client.post(
            "/api/v1/users", json={"email": "digest@example.org", "password": "pass-word-123"}, headers=admin
        )
        headers = bearer(login(client, "digest@example.org", "pass-word-123"))
        jobs = [
            client.post("/api/v1/jobs", json={"app": app}, headers=headers).json()
            for app in ("quick", "fails", "quick")
        ]
        for job in jobs:
            wait_for_end(client, job["id"], headers)
        eventually(lambda: len(box.messages) >= 1, 30, "the digest")
        assert len(box.messages) == 1 and box.messages[0]["Subject"] == "labcloud: 3 jobs ended (1 failed)"
        text = mail_parts(box.messages[0])["text/plain"]
        assert all(job["id"] in text for job in jobs)


@pytest.fixture
def smtps(settings: Settings, certificate: tuple[Path, Path]) -> int:
    """The server's settings name an smtps:// server (on a port nobody listens on yet)."""
    port = free_port()
    settings.smtp_url = f"smtps://127.0.0.1:{port}"
    settings.smtp_ca_file = str(certificate[1])
    settings.mail_digest_window_s = 0
    settings.mail_retry_s = 0.5
    write_app(settings.effective_apps_dir, "quick", ["echo", "done"])
    return port


def test_implicit_tls_and_a_server_that_comes_back(
    smtps: int, certificate: tuple[Path, Path], make_user: Any, request: pytest.FixtureRequest
) -> None:
    """smtps://: TLS from the first byte. The server is down when the job ends; the mail goes once it
    is up."""
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    job = client.post("/api/v1/jobs", json={"app": "quick"}, headers=user.headers).json()
    wait_for_end(client, job["id"], user.headers)
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=smtps, ssl_context=tls_context(certificate))
    controller.start()
    try:
        eventually(lambda: len(box.messages) == 1, 30, "the mail once the server is up")
        assert job["id"] in mail_parts(box.messages[0])["text/plain"]
    finally:
        controller.stop()


def _link(message: Message) -> str:
    import re

    found = re.search(
        r"https://lab\.example\.org(/login/set-password\?token=[^\s\"<]+)", mail_parts(message)["text/plain"]
    )
    assert found, mail_parts(message)
    return found.group(1)


def test_a_reset_link_sets_a_password_once_and_an_invitation_lets_a_newcomer_in(
    mailing: Settings, inbox: tuple[Inbox, int], make_user: Any, admin: Any, request: pytest.FixtureRequest
) -> None:
    from conftest import login

    box, _ = inbox
    client: TestClient = request.getfixturevalue("client")
    user = make_user()
    # the same answer for an unknown address; a mail for a known one
    assert client.post("/api/v1/auth/password-reset", json={"email": "nobody@example.org"}).status_code == 202
    assert client.post("/api/v1/auth/password-reset", json={"email": user.email}).status_code == 202
    eventually(lambda: len(box.messages) == 1, 30, "the reset mail")
    assert (
        box.messages[0]["To"] == user.email and box.messages[0]["Subject"] == "labcloud: reset your password"
    )
    link = _link(box.messages[0])
    token = link.split("token=", 1)[1]
    # the link's page sets it (the browser's way), then the token is spent
    browser = TestClient(client.app, base_url="https://testserver")  # (https: the cookies are Secure)
    page = browser.get(link)
    assert page.status_code == 200 and "Choose your password" in page.text
    form = {"token": token, "password": "a-new-password-1", "csrf_token": csrf_of(page.text)}
    done = browser.post("/login/set-password", data=form)
    assert done.status_code == 200 and "Your password is set" in done.text, done.text
    assert login(client, user.email, "a-new-password-1")
    again = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "another-one-22"}
    )
    assert again.status_code == 422 and again.json()["errors"][0]["loc"] == ["body", "token"], again.text
    forged = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token[:-4] + "AAAA", "password": "x" * 12}
    )
    assert forged.status_code == 422
    # an invitation: no password is shown, the newcomer chooses one from the mail
    invited = client.post(
        "/api/v1/users", json={"email": "newcomer@example.org", "invite": True}, headers=admin.headers
    )
    assert invited.status_code == 201 and invited.json()["initial_password"] is None, invited.text
    eventually(lambda: len(box.messages) == 2, 30, "the invitation")
    assert box.messages[1]["Subject"] == "labcloud: your invitation"
    token = _link(box.messages[1]).split("token=", 1)[1]
    r = client.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "newcomer-pass-1"}
    )
    assert r.status_code == 204, r.text
    assert login(client, "newcomer@example.org", "newcomer-pass-1")


def test_without_a_mail_server_resets_and_invitations_say_so(client: TestClient, admin: Any) -> None:
    r = client.post("/api/v1/auth/password-reset", json={"email": "someone@example.org"})
    assert r.status_code == 409 and "sends no e-mail" in r.text
    r = client.post("/api/v1/users", json={"email": "x@example.org", "invite": True}, headers=admin.headers)
    assert r.status_code == 409
    page = client.get("/login/forgot")
    assert page.status_code == 200 and "sends no e-mail" in page.text
