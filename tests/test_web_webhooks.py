"""Webhook pages in the browser: add one (its secret shown once), errors next to their fields, every
delivery with each try's answer from a real receiver, send test, redeliver, pause and resume, delete; a
project's webhooks for its managers only; another user's webhook not found; hostile text escaped."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from conftest import Account
from labcloud.settings import Settings
from live_server import eventually
from test_web import XSS, browser_login, create_project, csrf_of
from webhook_helpers import Receiver

MINE = "/account/webhooks"
UUID = r"[0-9a-f-]{36}"


def add(browser: TestClient, url: str, events: list[str], where: str = MINE, **extra: str) -> httpx.Response:
    """Fill in the add form on ``where`` (your webhooks, or a project's) and send it."""
    page = browser.get(where)
    assert page.status_code == 200, page.text[:500]
    form = {"csrf_token": csrf_of(page.text), "url": url, "events": events, **extra}
    return browser.post(where, data=form)


def secret_of(html: str) -> str | None:
    found = re.search(r'value="(whsec_[^"]+)" id="webhook-secret"', html)
    return found.group(1) if found else None


def rows(html: str) -> dict[str, str]:
    """Each listed webhook's row by its id."""
    return {
        m.group(1): m.group(0) for m in re.finditer(rf'<tr data-webhook="({UUID})".*?</tr>', html, re.DOTALL)
    }


def delivery_rows(html: str) -> list[str]:
    return re.findall(rf'<tr data-delivery="{UUID}".*?</tr>', html, re.DOTALL)


def statuses(row: str) -> list[str]:
    """The answer of each try shown in a delivery's row, oldest first ("" for one that was not sent)."""
    return re.findall(r'<li data-status="(\d*)"', row)


def added(browser: TestClient, url: str, events: list[str]) -> tuple[str, str]:
    """A new webhook of the browser's user: its id and secret."""
    r = add(browser, url, events)
    assert r.status_code == 201, r.text[:2000]
    secret = secret_of(r.text)
    [found] = [i for i, row in rows(r.text).items() if f"<code>{url}</code>" in row]
    assert secret, r.text[:2000]
    return found, secret


def form_on(html: str, action_end: str) -> str:
    found = re.search(rf'action="(/account/webhooks/[^"]*{action_end})"', html)
    assert found, f"no form ending in {action_end}"
    return found.group(1)


# ------------------------------------------------------------------------------------------- adding


def test_a_webhook_added_on_the_page_shows_its_secret_once(
    hooked: Settings, receiver: Receiver, app: Any, user: Account
) -> None:
    browser = browser_login(app, user.email, user.password)
    account = browser.get("/account").text
    assert f'href="{MINE}"' in account
    assert "You have no webhooks." in browser.get(MINE).text
    r = add(browser, receiver.url, ["job.failed", "job.state_changed"])
    assert r.status_code == 201, r.text[:2000]
    secret = secret_of(r.text)
    assert secret and "Copy it now: it is not shown again" in r.text
    [(hook_id, row)] = rows(r.text).items()
    assert f"<code>{receiver.url}</code>" in row and 'data-state="active"' in row
    assert (
        '<span class="tag">job.failed</span>' in row and '<span class="tag">job.state_changed</span>' in row
    )
    assert "job.succeeded" not in row and "your jobs" in row and "<time" in row
    assert f'href="{MINE}/{hook_id}"' in row
    again = browser.get(MINE).text  # a reload lists it, without the secret
    assert hook_id in rows(again) and secret not in again and secret_of(again) is None
    page = browser.get(f"{MINE}/{hook_id}").text
    assert secret not in page and receiver.url in page
    api = browser.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).json()
    assert api["events"] == ["job.failed", "job.state_changed"] and api["state"] == "active"


def test_a_private_address_and_bad_events_are_refused_next_to_their_fields(
    settings: Settings, app: Any, user: Account
) -> None:
    assert not settings.webhook_allow_private  # (the default)
    browser = browser_login(app, user.email, user.password)
    r = add(browser, "http://127.0.0.1:9/hook", [])
    assert r.status_code == 422
    url_error = re.search(r'data-error-for="url">([^<]*)<', r.text)
    assert url_error and "127.0.0.1" in url_error.group(1) and "does not download from" in url_error.group(1)
    assert re.search(r'data-error-for="events">one or more of job\.succeeded', r.text)  # every error at once
    assert 'value="http://127.0.0.1:9/hook"' in r.text and 'aria-invalid="true"' in r.text  # kept
    assert secret_of(r.text) is None and not rows(r.text)
    for url in ("http://localhost:9/hook", "http://169.254.169.254/latest/meta-data", "ftp://example.org/x"):
        refused = add(browser, url, ["job.failed"])
        assert refused.status_code == 422 and 'data-error-for="url"' in refused.text, url
        assert 'data-error-for="events"' not in refused.text
    wrong = add(browser, "http://127.0.0.1:9/hook", ["job.failed", "job.exploded"])
    assert wrong.status_code == 422 and 'data-error-for="events"' in wrong.text
    assert browser.get("/api/v1/webhooks", headers=user.headers).json() == []


def test_hostile_text_in_a_url_is_escaped(
    hooked: Settings, receiver: Receiver, app: Any, user: Account
) -> None:
    browser = browser_login(app, user.email, user.password)
    hostile = f'{receiver.url}?q="><b>{XSS}'
    r = add(browser, hostile, ["job.failed"])
    assert r.status_code == 201, r.text[:2000]
    [hook_id] = rows(r.text)
    for html in (r.text, browser.get(MINE).text, browser.get(f"{MINE}/{hook_id}").text):
        assert XSS not in html and '"><b>' not in html
        assert "?q=&#34;&gt;&lt;b&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    refused = add(browser, f"javascript:{XSS}", ["job.failed"])  # shown again in the field, with its error
    assert refused.status_code == 422 and XSS not in refused.text
    assert 'value="javascript:&lt;script&gt;alert(1)&lt;/script&gt;"' in refused.text


# ------------------------------------------------------------------------------------- deliveries


def test_send_test_and_redeliver_show_every_try_with_its_answer(
    hooked: Settings, receiver: Receiver, app: Any, user: Account
) -> None:
    browser = browser_login(app, user.email, user.password)
    hook_id, secret = added(browser, receiver.url, ["job.succeeded"])
    page = browser.get(f"{MINE}/{hook_id}").text
    assert "Nothing has been sent to it yet" in page and not delivery_rows(page)
    receiver.answers = [500]  # the first try fails, the retry gets through
    r = browser.post(form_on(page, "/test"), data={"csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "webhook.test event is on its way" in r.text
    eventually(lambda: len(receiver.seen) == 2, 30, "the test and its retry")
    for headers, body in receiver.seen:  # signed with the secret the page showed once
        Webhook(secret).verify(body, headers)
    assert [b["type"] for b in receiver.bodies()] == ["webhook.test", "webhook.test"]
    event_id = receiver.seen[0][0]["webhook-id"]

    def delivered() -> str | None:
        shown = delivery_rows(browser.get(f"{MINE}/{hook_id}").text)
        return shown[0] if len(shown) == 1 and 'data-state="delivered"' in shown[0] else None

    row = eventually(delivered, 30, "the delivery on the page")
    assert '<span class="tag" data-kind>webhook.test</span>' in row and event_id in row
    assert statuses(row) == ["500", "204"] and re.search(r"data-attempts>2<", row)
    assert "HTTP 500" in row and "HTTP 204" in row
    # the polled table says the same
    partial = browser.get(f"{MINE}/{hook_id}/deliveries")
    assert (
        partial.status_code == 200 and "<html" not in partial.text and statuses(partial.text) == statuses(row)
    )
    # the first try's failure is the webhook's last error while it had not got through; now there is none
    listing = browser.get(MINE).text
    assert '<span class="muted">—</span>' in rows(listing)[hook_id].split("data-last-error>")[1]

    redeliver = re.search(r'action="(/account/webhooks/[^"]+/redeliver)"', row)
    assert redeliver
    r = browser.post(redeliver.group(1), data={"csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "being sent again" in r.text
    eventually(lambda: len(receiver.seen) == 3, 30, "the redelivery")
    assert receiver.seen[-1][0]["webhook-id"] == event_id  # the same event: receivers drop repeats by it
    row = eventually(
        lambda: (d := delivered()) and len(statuses(d)) == 3 and d, 30, "the redelivery's try on the page"
    )
    assert statuses(row) == ["500", "204", "204"] and re.search(r"data-attempts>3<", row)


def test_a_webhook_that_keeps_failing_is_paused_says_why_and_resumes(
    hooked: Settings, receiver: Receiver, app: Any, user: Account
) -> None:
    hooked.webhook_max_attempts = 1
    hooked.webhook_pause_after = 1
    browser = browser_login(app, user.email, user.password)
    hook_id, _ = added(browser, receiver.url, ["job.succeeded"])
    page = browser.get(f"{MINE}/{hook_id}").text
    assert "Resume" not in page and 'id="paused"' not in page
    receiver.answers = [503]
    browser.post(form_on(page, "/test"), data={"csrf_token": csrf_of(page)})
    paused = eventually(
        lambda: 'id="paused"' in (p := browser.get(f"{MINE}/{hook_id}").text) and p, 30, "the pause"
    )
    assert "1 events in a row could not be delivered" in paused
    assert re.search(r"data-last-error>HTTP 503", paused)
    listed = rows(browser.get(MINE).text)[hook_id]
    assert 'data-state="paused"' in listed and "HTTP 503" in listed
    resumed = browser.post(form_on(paused, "/resume"), data={"csrf_token": csrf_of(paused)})
    assert resumed.status_code == 200 and "active again" in resumed.text and 'id="paused"' not in resumed.text
    assert browser.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).json()["state"] == "active"
    # pausing by hand says so, too
    r = browser.post(form_on(resumed.text, "/pause"), data={"csrf_token": csrf_of(resumed.text)})
    assert 'id="paused"' in r.text and "paused by its owner" in r.text


def test_a_webhook_is_deleted_after_a_confirmation(
    hooked: Settings, receiver: Receiver, app: Any, user: Account
) -> None:
    browser = browser_login(app, user.email, user.password)
    hook_id, _ = added(browser, receiver.url, ["job.succeeded"])
    page = browser.get(f"{MINE}/{hook_id}").text
    confirm = re.search(r"<details[^>]*>\s*<summary>Delete.*?</details>", page, re.DOTALL)
    assert confirm and f'action="{MINE}/{hook_id}/delete"' in confirm.group(0)  # behind its summary
    r = browser.post(f"{MINE}/{hook_id}/delete", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == MINE
    assert hook_id not in browser.get(MINE).text
    assert browser.get(f"{MINE}/{hook_id}").status_code == 404
    assert browser.get(f"/api/v1/webhooks/{hook_id}", headers=user.headers).status_code == 404


# ----------------------------------------------------------------------------------------- access


def test_another_users_webhook_is_not_found_and_forms_need_the_csrf_token(
    hooked: Settings, receiver: Receiver, app: Any, make_user: Any
) -> None:
    owner, other = make_user(), make_user()
    browser = browser_login(app, owner.email, owner.password)
    hook_id, _ = added(browser, receiver.url, ["job.succeeded"])
    page = browser.get(f"{MINE}/{hook_id}").text
    browser.post(form_on(page, "/test"), data={"csrf_token": csrf_of(page)})
    eventually(lambda: len(receiver.seen) == 1, 30, "the test")
    row = eventually(lambda: delivery_rows(browser.get(f"{MINE}/{hook_id}").text), 30, "the delivery")[0]
    redeliver = re.search(r'action="(/account/webhooks/[^"]+/redeliver)"', row)
    assert redeliver

    stranger = browser_login(app, other.email, other.password)
    token = csrf_of(stranger.get(MINE).text)
    assert hook_id not in stranger.get(MINE).text
    for r in (
        stranger.get(f"{MINE}/{hook_id}"),
        stranger.get(f"{MINE}/{hook_id}/deliveries"),
        *(
            stranger.post(f"{MINE}/{hook_id}/{action}", data={"csrf_token": token})
            for action in ("test", "pause", "resume", "delete")
        ),
        stranger.post(redeliver.group(1), data={"csrf_token": token}),
    ):
        assert r.status_code == 404 and "text/html" in r.headers["content-type"], r.request.url
    assert browser.get(f"/api/v1/webhooks/{hook_id}", headers=owner.headers).json()["state"] == "active"
    assert len(delivery_rows(browser.get(f"{MINE}/{hook_id}").text)) == 1  # no test was queued
    # the owner's own forms without the session's CSRF token are refused
    for action in ("test", "pause", "delete"):
        r = browser.post(f"{MINE}/{hook_id}/{action}", data={"csrf_token": "forged"})
        assert r.status_code == 403, action
    r = browser.post(MINE, data={"csrf_token": "forged", "url": receiver.url, "events": ["job.failed"]})
    assert r.status_code == 403
    assert len(browser.get("/api/v1/webhooks", headers=owner.headers).json()) == 1


def test_a_projects_webhooks_are_for_its_managers(
    hooked: Settings, receiver: Receiver, app: Any, make_user: Any
) -> None:
    manager, member, outsider = make_user(), make_user(), make_user()
    browser = browser_login(app, manager.email, manager.password)
    create_project(browser, "Hooks", "hooks")
    html = browser.get("/projects/hooks").text
    r = browser.post(
        "/projects/hooks/members",
        data={"csrf_token": csrf_of(html), "email": member.email, "role": "member"},
    )
    assert r.status_code == 200, r.text[:500]
    assert 'href="/projects/hooks/webhooks"' in browser.get("/projects/hooks").text

    # a member sees no link, and neither the page nor its form
    as_member = browser_login(app, member.email, member.password)
    assert 'href="/projects/hooks/webhooks"' not in as_member.get("/projects/hooks").text
    token = csrf_of(as_member.get(MINE).text)
    form = {"csrf_token": token, "url": receiver.url, "events": ["job.succeeded"]}
    for r in (
        as_member.get("/projects/hooks/webhooks"),
        as_member.post("/projects/hooks/webhooks", data=form),
    ):
        assert r.status_code == 403 and "needs manager or more" in r.text
    assert '<option value="hooks"' not in as_member.get(MINE).text  # not offered on their own page
    sneaked = as_member.post(MINE, data={**form, "project": "hooks"})  # nor taken from it
    assert sneaked.status_code == 422 and re.search(
        r'data-error-for="project">[^<]*needs manager', sneaked.text
    )
    assert as_member.get("/api/v1/webhooks", headers=member.headers).json() == []
    # to an outsider the project is not there
    as_outsider = browser_login(app, outsider.email, outsider.password)
    outsider_form = {**form, "csrf_token": csrf_of(as_outsider.get(MINE).text)}
    for r in (
        as_outsider.get("/projects/hooks/webhooks"),
        as_outsider.post("/projects/hooks/webhooks", data=outsider_form),
    ):
        assert r.status_code == 404

    # the manager adds one on the project's page; it hears of the member's jobs in the project
    r = add(browser, receiver.url, ["job.succeeded"], where="/projects/hooks/webhooks")
    assert r.status_code == 201 and secret_of(r.text), r.text[:2000]
    [hook_id] = rows(r.text)
    assert browser.get(f"/api/v1/webhooks/{hook_id}", headers=manager.headers).json()["project"] == "hooks"
    listed = rows(browser.get(MINE).text)[hook_id]
    assert 'project <a href="/projects/hooks">hooks</a>' in listed
    page = browser.get(f"{MINE}/{hook_id}").text
    assert 'href="/projects/hooks/webhooks"' in page
    # it can be chosen on the manager's own page, too
    assert '<option value="hooks"' in browser.get(MINE).text
    r = add(browser, receiver.url, ["job.failed"], project="hooks")
    assert r.status_code == 201
    assert len(rows(browser.get("/projects/hooks/webhooks").text)) == 2
    # the member's webhook page for it is not found
    assert as_member.get(f"{MINE}/{hook_id}").status_code == 404
