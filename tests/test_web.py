"""The browser UI, page by page: log in, forms with CSRF, escaping, access rules, errors next to fields."""

from __future__ import annotations

import io
import re
import socket
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account
from jobs_helpers import wait_for_end, write_app
from labcloud.settings import Settings
from labcloud.web import session as web_session
from live_server import eventually

XSS = "<script>alert(1)</script>"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def browser_login(app: Any, email: str, password: str) -> TestClient:
    """A browser of its own (own cookie jar) logged in through the login form."""
    browser = TestClient(app, base_url="http://testserver")
    page = browser.get("/login")
    assert page.status_code == 200
    r = browser.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return browser


@pytest.fixture
def browser(client: TestClient, app: Any) -> TestClient:
    return browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def user_browser(app: Any, user: Account) -> TestClient:
    return browser_login(app, user.email, user.password)


def upload(client: TestClient, account: Account, path: str, data: bytes) -> None:
    r = client.put(f"/api/v1/files/{path}", content=data, headers=account.headers)
    assert r.status_code == 201, r.text


# ------------------------------------------------------------------------------------------- sessions


def test_pages_need_a_login_and_send_the_browser_to_the_login_form(client: TestClient) -> None:
    for path in ("/", "/files", "/jobs", "/apps/spikes", "/account"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login"), path
    assert client.get("/jobs?state=running", follow_redirects=False).headers["location"] == (
        "/login?next=%2Fjobs%3Fstate%3Drunning"
    )
    # htmx polls are told to go to the login page instead of swapping a login form into the page
    # and back afterwards to the page the poll came from, never to the fragment it asked for
    shown = {"HX-Request": "true", "HX-Current-URL": "http://testserver/jobs/abc?tab=log"}
    r = client.get("/jobs/abc/status", headers=shown, follow_redirects=False)
    assert r.headers["HX-Redirect"] == "/login?next=%2Fjobs%2Fabc%3Ftab%3Dlog"
    r = client.get("/jobs/rows", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers["HX-Redirect"] == "/login"  # (no page named: the dashboard afterwards)
    evil = {"HX-Request": "true", "HX-Current-URL": "https://evil.example//elsewhere"}
    r = client.get("/jobs/rows", headers=evil, follow_redirects=False)
    assert r.headers["HX-Redirect"] == "/login"
    # a form sent after the session ended: back to the page it was on, not to the address it was sent to
    page = {"Referer": "http://testserver/jobs/abc?tab=log"}
    r = client.post("/jobs/abc/cancel", data={"csrf_token": "x"}, headers=page, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fjobs%2Fabc%3Ftab%3Dlog"
    r = client.post("/jobs/abc/cancel", data={"csrf_token": "x"}, follow_redirects=False)
    assert r.headers["location"] == "/login"
    evil = {"Referer": "https://evil.example//elsewhere"}
    r = client.post("/files/delete", data={"path": "x"}, headers=evil, follow_redirects=False)
    assert r.headers["location"] == "/login"


def test_login_sets_a_private_session_cookie_and_logout_ends_it(client: TestClient, app: Any) -> None:
    page = client.get("/login")
    wrong = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": "not-it", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert wrong.status_code == 401
    assert "The email or password is not correct." in wrong.text
    assert web_session.SESSION_COOKIE not in client.cookies

    r = client.post(
        "/login",
        data={
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "/jobs",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/jobs"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    assert dashboard.headers["content-security-policy"].startswith("default-src 'self'")

    # the session is no bearer token for the API
    session_value = client.cookies[web_session.SESSION_COOKIE]
    api = client.get("/api/v1/me", headers={"Authorization": f"Bearer {session_value}"})
    assert api.status_code == 401

    r = client.post("/logout", data={"csrf_token": csrf_of(dashboard.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_session_cookie_is_secure_when_served_over_https(client: TestClient, app: Any) -> None:
    browser = TestClient(app, base_url="https://testserver")
    page = browser.get("/login")
    r = browser.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert "Secure" in r.headers["set-cookie"]


def test_login_form_only_accepts_its_own_csrf_token(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 403
    assert "text/html" in r.headers["content-type"]
    assert web_session.SESSION_COOKIE not in client.cookies


def test_open_redirects_are_refused_after_login(client: TestClient) -> None:
    page = client.get("/login?next=//evil.example/")
    assert 'name="next" value="/"' in page.text
    r = client.post(
        "/login",
        data={
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/"


# ----------------------------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("token", [None, "wrong"])
def test_forms_without_the_session_csrf_token_are_refused(browser: TestClient, token: str | None) -> None:
    data = {"name": "cross-site-token", "scopes": ["read"]}
    if token is not None:
        data["csrf_token"] = token
    r = browser.post("/account/tokens", data=data)
    assert r.status_code == 403
    assert "did not come from this site" in r.text
    assert "cross-site-token" not in browser.get("/account").text
    # and htmx/fetch calls need the header
    assert browser.post("/ui/token").status_code == 403
    assert browser.post("/ui/token", headers={"X-CSRF-Token": "nope"}).status_code == 403


def test_the_page_can_get_a_short_lived_token_for_its_own_api_calls(browser: TestClient) -> None:
    csrf = csrf_of(browser.get("/").text)
    r = browser.post("/ui/token", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    token = r.json()["access_token"]
    me = browser.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["email"] == ADMIN_EMAIL


# ---------------------------------------------------------------------------------------------- pages


def test_every_main_page_renders(browser: TestClient) -> None:
    for path, text in [
        ("/", "Running and queued"),
        ("/apps", "Spike detection"),
        ("/apps/spikes", "Threshold spike detection"),
        ("/apps/lif", "Sweep an E/I"),
        ("/files", "No files yet"),
        ("/jobs", "You have not run any jobs yet"),
        ("/account", "API tokens"),
        ("/projects", "Your projects"),
        ("/admin/users", ADMIN_EMAIL),
        ("/admin/apps", "Every app file loaded"),
        ("/admin/workers", "No workers are registered"),
    ]:
        r = browser.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert text in r.text, path


def test_signed_in_pages_listen_for_job_ends(browser: TestClient) -> None:
    """Every page of a signed-in user has the job-end notes' script and its polite live region; the
    account page, the button that asks for desktop notifications; the login page, neither."""
    for path in ("/", "/files", "/account"):
        html = browser.get(path).text
        assert '<script src="/static/notices.js?v=' in html, path
        assert re.search(r'id="job-notices"[^>]*role="status" aria-live="polite"', html), path
    assert 'id="desktop-notices"' in browser.get("/account").text
    assert browser.get("/static/notices.js").status_code == 200
    browser.cookies.clear()
    anonymous = browser.get("/login").text
    assert "notices.js" not in anonymous and "job-notices" not in anonymous


def test_run_form_is_generated_from_the_parameter_schema(browser: TestClient, admin: Account) -> None:
    upload(browser, admin, "recordings/a.csv", b"1\n2\n3\n")
    html = browser.get("/apps/spikes").text
    # numbers with their bounds and defaults, help text, enums as selects, the input picker with the file
    assert re.search(
        r'<input id="f-params-threshold" name="params.threshold" type="number"\s+value="4.5"', html
    )
    assert 'min="1"' in html and 'max="50"' in html
    assert "Detection threshold in units of the noise sigma" in html
    assert re.search(r'<select id="f-params-polarity" name="params.polarity"', html)
    assert '<option value="neg" selected>neg</option>' in html
    assert '<option value="recordings/a.csv"' in html
    assert 'name="resources.memory_mb"' in html
    # labels are the schema's titles with their units; a pattern's error quotes its description
    assert re.search(r'<label for="f-params-threshold">Threshold \(σ\)', html)  # noqa: RUF001
    lif = browser.get("/apps/lif").text
    assert re.search(r'<label for="f-params-drive">External drive \(kHz\)', lif) and "Low hz" not in lif
    r = browser.post("/apps/lif/run", data={"csrf_token": csrf_of(lif), "params.values": "4;5"})
    assert r.status_code == 422
    assert 'data-error-for="params.values">is not in the expected form: numbers separated by commas' in r.text
    assert "\\d+" not in r.text


def test_the_input_picker_offers_what_the_slot_takes_and_browses_folders(
    browser: TestClient, admin: Account
) -> None:
    for path in ("rec/day1/a.csv", "rec/day1/b.npy", "rec/notes.txt", "top.csv"):
        upload(browser, admin, path, b"1\n2\n")
    html = browser.get("/apps/spikes").text
    datalist = html[html.index('<datalist id="f-inputs-trace-list">') :]
    datalist = datalist[: datalist.index("</datalist>")]
    offered = re.findall(r'<option value="([^"]+)">', datalist)
    assert set(offered) == {"rec/day1/a.csv", "rec/day1/b.npy", "top.csv"}  # not the .txt
    assert "Takes a file (.csv or .npy)" in html
    # the browser: a folder at a time, its folders to open and the files the slot takes
    top = browser.get("/ui/picker?type=file&accept=.csv,.npy&target=f-inputs-trace").text
    assert 'data-pick="top.csv" data-target="f-inputs-trace"' in top and "path=rec" in top
    inside = browser.get("/ui/picker?type=file&accept=.csv,.npy&target=f-inputs-trace&path=rec").text
    assert "path=rec/day1" in inside and "notes.txt" not in inside and "↑ up" in inside
    day = browser.get("/ui/picker?type=file&accept=.csv,.npy&target=f-inputs-trace&path=rec/day1").text
    assert 'data-pick="rec/day1/a.csv"' in day and 'data-pick="rec/day1/b.npy"' in day
    assert browser.get("/ui/picker?target=bad%22id").status_code == 404  # (a target is an element id)
    # a typed path the slot does not take is refused at submit, in words
    r = browser.post("/apps/spikes/run", data={"csrf_token": csrf_of(html), "inputs.trace": "rec/notes.txt"})
    assert r.status_code == 422
    assert (
        'data-error-for="inputs.trace">takes a file (.csv or .npy); &#39;rec/notes.txt&#39; is not one'
        in r.text
    )
    r = browser.post("/apps/spikes/run", data={"csrf_token": csrf_of(html), "inputs.trace": "rec/day1"})
    assert (
        'data-error-for="inputs.trace">takes a file (.csv or .npy); &#39;rec/day1&#39; is not one' in r.text
    )


def test_invalid_values_are_shown_next_to_their_fields(browser: TestClient, admin: Account) -> None:
    upload(browser, admin, "a.csv", b"1\n2\n")
    html = browser.get("/apps/spikes").text
    r = browser.post(
        "/apps/spikes/run",
        data={
            "csrf_token": csrf_of(html),
            "version": "1.0",
            "entrypoint": "detect",
            "params.threshold": "0.5",
            "params.polarity": "neg",
            "resources.cpus": "1",
        },
    )
    assert r.status_code == 422
    assert "The job was not started" in r.text
    assert re.search(r'data-error-for="params.threshold">must be at least 1 σ<', r.text)  # noqa: RUF001
    assert 'value="0.5"' in r.text  # what was typed stays in the form
    assert browser.get("/api/v1/jobs", headers=admin.headers).json()["items"] == []

    no_input = browser.post("/apps/spikes/run", data={"csrf_token": csrf_of(html), "inputs.trace": ""})
    assert no_input.status_code == 422
    assert re.search(r'data-error-for="inputs.trace">missing required input', no_input.text)
    not_mine = browser.post(
        "/apps/spikes/run", data={"csrf_token": csrf_of(html), "inputs.trace": "nope.csv"}
    )
    assert re.search(
        r"data-error-for=\"inputs.trace\">you have no file or folder &#39;nope.csv&#39;", not_mine.text
    )

    too_big = browser.post(
        "/apps/spikes/run",
        data={
            "csrf_token": csrf_of(html),
            "params.threshold": "5",
            "inputs.trace": "a.csv",
            "resources.memory_mb": "999999999",
        },
    )
    assert too_big.status_code == 422
    assert re.search(r'data-error-for="resources.memory_mb">', too_big.text)


def test_every_problem_of_the_run_form_is_told_at_once_in_words_and_units(
    browser: TestClient, admin: Account
) -> None:
    html = browser.get("/apps/spikes").text
    assert not re.search(r'max="\d+\.0"', html) and "up to 1024" not in html  # the machine's own limits
    r = browser.post(
        "/apps/spikes/run",
        data={
            "csrf_token": csrf_of(html),
            "tags": "good=1, broken",
            "params.threshold": "high",
            "resources.cpus": "64",
            "resources.memory_mb": "999999999",
            "resources.timeout_s": "1.5",
        },
    )
    assert r.status_code == 422
    errors = dict(re.findall(r'data-error-for="([^"]+)">([^<]*)<', r.text))
    assert set(errors) == {
        "tags",
        "inputs.trace",
        "params.threshold",
        "resources.cpus",
        "resources.memory_mb",
        "resources.timeout_s",
    }, errors  # a bad tag hides nothing else
    assert errors["tags"] == "write each tag as key=value (&#39;broken&#39; is not)"
    assert errors["params.threshold"] == "must be a number"
    assert re.fullmatch(r"at most \d+ CPUs here \(asked for 64 CPUs\)", errors["resources.cpus"]), errors
    # over what any installation allows, said as this one's limit, the one the help gives
    assert re.fullmatch(r"at most \d+ MB here \(asked for 999999999 MB\)", errors["resources.memory_mb"]), (
        errors
    )
    assert errors["resources.timeout_s"] == "must be a whole number from 1 second to 2592000 seconds"
    assert "e+" not in r.text and "of type" not in r.text
    # the summary takes focus and links each field, in the page's order
    summary = r.text[r.text.index('id="form-errors"') :]
    summary = summary[: summary.index("</div>")]
    assert "data-focus-on-load" in summary and "6 fields to fix" in summary
    links = re.findall(r'<a href="#([^"]+)">', summary)
    assert links == [
        "f-inputs-trace",
        "f-params-threshold",
        "f-tags",
        "f-resources-cpus",
        "f-resources-memory_mb",
        "f-resources-timeout_s",
    ]
    for fid in links:
        assert f'id="{fid}"' in r.text
    assert 'id="f-tags"' in r.text and 'aria-invalid="true"' in r.text.split('id="f-tags"')[1][:300]
    assert browser.get("/api/v1/jobs", headers=admin.headers).json()["items"] == []


def test_a_job_started_from_the_form_has_its_page(browser: TestClient, admin: Account) -> None:
    html = browser.get("/apps/hello").text
    r = browser.post(
        "/apps/hello/run",
        data={
            "csrf_token": csrf_of(html),
            "params.name": "Ada",
            "params.times": "2",
            "name": "greet",
            "tags": "exp=1",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    job_url = r.headers["location"]
    job = browser.get("/api/v1/jobs", headers=admin.headers).json()["items"][0]
    assert job_url == f"/jobs/{job['id']}"
    assert job["params"] == {"name": "Ada", "times": 2} and job["tags"] == {"exp": "1"}
    page = browser.get(job_url)
    assert page.status_code == 200
    assert "greet" in page.text and f'data-stream="/jobs/{job["id"]}/log/stream"' in page.text
    assert browser.get(f"/jobs/{job['id']}/status").status_code == 200
    done = wait_for_end(browser, job["id"], admin.headers)
    assert done["worker"] is None  # (not a pull job)
    [attempt] = browser.get(f"/api/v1/jobs/{job['id']}", headers=admin.headers).json()["attempt_history"]
    assert attempt["ran_on"] == f"this server ({socket.gethostname()})" and attempt["state"] == "succeeded"
    assert (
        f"Attempt 1 ran on <strong>this server ({socket.gethostname()})</strong>" in browser.get(job_url).text
    )
    listing = browser.get("/jobs/rows")
    assert job["id"] in listing.text


def test_the_jobs_list_finds_jobs_by_name_tag_and_date_and_shows_their_tags(
    browser: TestClient, admin: Account
) -> None:
    def submit(name: str, tags: dict[str, str]) -> str:
        r = browser.post(
            "/api/v1/jobs", json={"app": "hello", "name": name, "tags": tags}, headers=admin.headers
        )
        assert r.status_code == 201, r.text
        job_id: str = r.json()["id"]
        return job_id

    calib = submit("Calibration 100%_run", {"exp": "7", "rig": "b"})
    other = submit("mapping", {"exp": "8"})
    plain = submit("calibrate again", {})

    def listed(query: str) -> set[str]:
        html = browser.get(f"/jobs?{query}").text
        return {j for j in (calib, other, plain) if f'data-job="{j}"' in html}

    assert listed("") == {calib, other, plain}
    assert listed("q=CALIB") == {calib, plain}  # any case
    assert listed("q=100%25_") == {calib}  # % and _ are letters here, not wildcards
    assert listed("q=0%25") == {calib} and listed("q=_run") == {calib} and listed("q=a_a") == set()
    assert listed("tag=exp%3D7") == {calib}
    assert listed("tag=exp%3D7+rig%3Db") == {calib} and listed("tag=exp%3D7+rig%3Dc") == set()
    today = datetime.now(UTC).date()
    assert listed(f"after={today}&before={today}") == {calib, other, plain}  # (the whole day)
    assert listed(f"after={today + timedelta(days=1)}") == set()
    assert listed("q=calib&tag=exp%3D7") == {calib}
    html = browser.get("/jobs?order=oldest").text  # oldest first, as asked
    assert html.index(f'data-job="{calib}"') < html.index(f'data-job="{plain}"')
    html = browser.get("/jobs").text
    assert html.index(f'data-job="{plain}"') < html.index(f'data-job="{calib}"')
    oldest = browser.get("/api/v1/jobs?order=oldest&limit=1", headers=admin.headers).json()
    assert oldest["items"][0]["id"] == calib and oldest["next_cursor"]
    cursor = oldest["next_cursor"]
    after = browser.get(f"/api/v1/jobs?order=oldest&limit=1&cursor={cursor}", headers=admin.headers)
    assert after.json()["items"][0]["id"] == other
    html = browser.get("/jobs").text  # tags are shown, each a link to its filter
    row = html[html.index(f'data-job="{calib}"') :]
    row = row[: row.index("</tr>")]
    assert 'href="/jobs?tag=exp%3D7"' in row and ">exp=7<" in row and ">rig=b<" in row
    bad = browser.get("/jobs?tag=nokey&after=31.12.2026")  # told next to the field, the rest still works
    assert (
        bad.status_code == 200
        and "write tags as key=value" in bad.text
        and "a date, as 2026-12-31" in bad.text
    )
    assert bad.text.count('aria-invalid="true"') == 2
    # the API filters by name too
    found = browser.get("/api/v1/jobs?q=calibration", headers=admin.headers).json()["items"]
    assert [j["id"] for j in found] == [calib]


def test_edit_and_run_again_opens_the_form_filled_in_and_marks_an_input_that_moved(
    browser: TestClient, admin: Account, user_browser: TestClient
) -> None:
    upload(browser, admin, "rec/a.csv", b"1\n2\n3\n")
    r = browser.post(
        "/api/v1/jobs",
        json={
            "app": "spikes",
            "params": {"threshold": 7.5, "polarity": "both"},
            "inputs": {"trace": "rec/a.csv"},
            "resources": {"memory_mb": 300},
            "name": "first try",
            "tags": {"exp": "4"},
        },
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    wait_for_end(browser, job["id"], admin.headers)
    page = browser.get(f"/jobs/{job['id']}").text
    link = re.search(r'id="edit-rerun" href="([^"]+)"', page)
    assert link, page
    form = browser.get(link.group(1).replace("&amp;", "&")).text
    assert 'id="from-job"' in form and "first try" in form
    assert re.search(r'id="f-params-threshold"[^>]*value="7.5"', form)
    assert '<option value="both" selected>both</option>' in form
    assert re.search(
        r'id="f-inputs-trace" name="inputs.trace" type="text" list="f-inputs-trace-list" value="rec/a.csv"',
        form,
    )
    assert re.search(r'id="f-resources-memory_mb"[^>]*value="300"', form)
    assert 'value="first try"' in form and 'value="exp=4"' in form
    # sent back as it is, with one change: a new job with the same answers but that one
    fields = dict(re.findall(r'<input id="f-[^"]+" name="([^"]+)"[^>]*value="([^"]*)"', form))
    fields.update({"csrf_token": csrf_of(form), "params.polarity": "both", "inputs.trace": "rec/a.csv"})
    fields.update(
        {"tags": "exp=4", "params.threshold": "9", "version": job["version"], "entrypoint": "detect"}
    )
    r = browser.post("/apps/spikes/run", data=fields, follow_redirects=False)
    assert r.status_code == 303, r.text
    new = browser.get(f"/api/v1/jobs/{r.headers['location'].rsplit('/', 1)[1]}", headers=admin.headers).json()
    assert new["params"]["threshold"] == 9 and new["params"]["polarity"] == "both"
    assert new["inputs"] == {"trace": "rec/a.csv"} and new["resources"]["memory_mb"] == 300
    assert new["name"] == "first try" and new["tags"] == {"exp": "4"}
    # the input moved away: the form still opens, the input marked, never a bare error
    moved = browser.post(
        "/api/v1/files:move", json={"from": "rec/a.csv", "to": "rec/b.csv"}, headers=admin.headers
    )
    assert moved.status_code in (200, 201), moved.text
    form = browser.get(link.group(1).replace("&amp;", "&"))
    assert form.status_code == 200
    assert 'data-error-for="inputs.trace">rec/a.csv was moved or deleted since that job ran' in form.text
    # someone else's job is not found
    assert user_browser.get(link.group(1).replace("&amp;", "&")).status_code == 404


def test_jobs_ticked_in_the_list_are_downloaded_cancelled_or_deleted_together(
    user_browser: TestClient, admin: Account, user: Account, settings: Settings
) -> None:
    write_app(
        settings.effective_apps_dir,
        "hold",
        ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"],
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 120},
    )
    user_browser.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    done = [
        user_browser.post(
            "/api/v1/jobs", json={"app": "hello", "params": {"name": n, "times": 1}}, headers=user.headers
        ).json()["id"]
        for n in ("Ada", "Grace")
    ]
    for job_id in done:
        wait_for_end(user_browser, job_id, user.headers)
    held = user_browser.post("/api/v1/jobs", json={"app": "hold"}, headers=user.headers).json()["id"]
    theirs = user_browser.post("/api/v1/jobs", json={"app": "hello"}, headers=admin.headers).json()["id"]
    page = user_browser.get("/jobs").text
    assert f'<input type="checkbox" name="job" value="{held}" form="bulk-jobs"' in page
    csrf = csrf_of(page)

    def act(action: str, ids: list[str]) -> Any:
        data = {"csrf_token": csrf, "action": action, "back": "/jobs", "job": ids}
        return user_browser.post("/jobs/bulk", data=data, follow_redirects=False)

    zipped = act("download", [*done, theirs])  # (someone else's job adds nothing)
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    names = sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist())
    assert names == sorted(f"{j}/greeting.txt" for j in done)
    r = act("cancel", [held, done[0]])
    assert r.status_code == 303
    flash = user_browser.get("/jobs").text
    assert "Cancelled 1 job." in flash and "1 could not be" in flash
    eventually(
        lambda: user_browser.get(f"/api/v1/jobs/{held}", headers=user.headers).json()["state"] == "cancelled",
        30,
        "the held job to be cancelled",
    )
    act("delete", [*done, theirs])
    assert "Deleted 2 jobs." in user_browser.get("/jobs").text
    for job_id in done:
        assert user_browser.get(f"/api/v1/jobs/{job_id}", headers=user.headers).status_code == 404
    assert (
        user_browser.get(f"/api/v1/jobs/{theirs}", headers=admin.headers).status_code == 200
    )  # not theirs to delete
    nothing = act("cancel", [])
    assert nothing.status_code == 303 and "Tick some jobs first" in user_browser.get("/jobs").text


def test_one_search_finds_apps_jobs_and_files_of_ones_projects_only(
    browser: TestClient, client: TestClient, admin: Account, user: Account, user_browser: TestClient
) -> None:
    upload(browser, admin, "calib/Calibration_2024.csv", b"1\n")
    upload(browser, admin, "other/notes.txt", b"x\n")
    upload(user_browser, user, "calib/theirs-calibration.csv", b"1\n")
    r = client.post("/api/v1/projects", json={"name": "Vision", "slug": "vision"}, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert (
        client.put(
            "/api/v1/files/projects/vision/calibration-shared.csv", content=b"1", headers=admin.headers
        ).status_code
        == 201
    )
    job = browser.post(
        "/api/v1/jobs",
        json={"app": "hello", "name": "calibration run", "tags": {"rig": "b"}},
        headers=admin.headers,
    ).json()
    page = browser.get("/search?q=CALIBRATION").text
    files = re.findall(r'data-found-file="([^"]+)"', page)
    assert files == [
        "calib/Calibration_2024.csv",
        "projects/vision/calibration-shared.csv",
    ]  # never another user's
    assert re.findall(r'data-found-job="([^"]+)"', page) == [job["id"]]
    assert browser.get("/search?q=rig%3Db").text.count(f'data-found-job="{job["id"]}"') == 1
    spikes = browser.get("/search?q=spike").text
    assert 'data-found-app="spikes"' in spikes and 'data-found-app="hello"' not in spikes
    assert "data-found-job=" in browser.get("/search?q=hello").text  # an app's name finds its jobs
    assert "Nothing is named like" in browser.get("/search?q=%25_%25").text  # (no wildcards)
    assert 'action="/search"' in browser.get("/").text  # the box in every page's header
    theirs = user_browser.get("/search?q=calibration").text
    assert re.findall(r'data-found-file="([^"]+)"', theirs) == ["calib/theirs-calibration.csv"]
    assert job["id"] not in theirs


def test_the_job_page_shows_the_end_of_a_long_log_and_streams_it(
    browser: TestClient, admin: Account, settings: Settings
) -> None:
    job_id = browser.post("/api/v1/jobs", json={"app": "hello"}, headers=admin.headers).json()["id"]
    assert wait_for_end(browser, job_id, admin.headers)["state"] == "succeeded"
    log = settings.jobs_dir / job_id / "job.log"
    log.write_bytes(b"short\n")
    page = browser.get(f"/jobs/{job_id}").text
    assert 'data-offset="0"' in page and "Showing the end of the log" not in page
    log.write_bytes(b"x" * 64 * 1024 + b"tail\n")
    page = browser.get(f"/jobs/{job_id}").text
    assert 'data-offset="5"' in page and "Showing the end of the log" in page
    assert browser.get(f"/jobs/{job_id}/log.txt").text == log.read_text()
    with browser.stream("GET", f"/jobs/{job_id}/log/stream", params={"offset": 64 * 1024}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        streamed = r.read()
    # each log event comes after the times of its lines (the page's "Show times")
    assert re.fullmatch(
        rb"event: times\ndata: \[\d{13}\]\n\n"
        rb"event: log\ndata: tail\nid: 65541\n\n"
        rb'event: end\ndata: \{"state": "succeeded"\}\n\n',
        streamed,
    ), streamed
    with browser.stream("GET", f"/jobs/{job_id}/log/stream", params={"offset": 2**62}) as r:
        assert r.read() == b'event: end\ndata: {"state": "succeeded"}\n\n'
    assert browser.get(f"/jobs/{job_id}/log/stream", params={"offset": 2**62 + 1}).status_code == 404


def test_a_job_s_outputs_download_from_its_page_with_the_session(
    browser: TestClient, admin: Account, user_browser: TestClient
) -> None:
    body = {"app": "hello", "params": {"name": "Ada", "times": 2}}
    job_id = browser.post("/api/v1/jobs", json=body, headers=admin.headers).json()["id"]
    assert wait_for_end(browser, job_id, admin.headers)["state"] == "succeeded"
    one = browser.get(f"/jobs/{job_id}/outputs/greeting.txt")
    assert one.status_code == 200 and one.text.count("Ada") == 2
    etag = one.headers["etag"]
    again = browser.get(f"/jobs/{job_id}/outputs/greeting.txt", headers={"If-None-Match": etag})
    assert again.status_code == 304
    ranged = browser.get(f"/jobs/{job_id}/outputs/greeting.txt", headers={"Range": "bytes=0-2"})
    assert ranged.status_code == 206 and ranged.content == one.content[:3]
    zipped = browser.get(f"/jobs/{job_id}/outputs.zip")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    assert f"job-{job_id}-outputs.zip" in zipped.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert archive.namelist() == ["greeting.txt"] and archive.read("greeting.txt") == one.content
    missing = browser.get(f"/jobs/{job_id}/outputs/other.txt")
    assert missing.status_code == 404 and "has no output" in missing.text
    assert "text/html" in missing.headers["content-type"]
    escape = browser.get(f"/jobs/{job_id}/outputs/..%2F..%2Fsecret")
    assert escape.status_code == 400 and "<title>Invalid path" in escape.text  # never read outside
    stranger = user_browser.get(f"/jobs/{job_id}/outputs/greeting.txt")
    assert stranger.status_code == 404 and "greeting" not in stranger.text
    assert user_browser.get(f"/jobs/{job_id}/log.txt").status_code == 404
    assert one.headers["content-disposition"].startswith("attachment")
    # opened full size: shown, not downloaded, and in a sandbox where nothing runs
    shown = browser.get(f"/jobs/{job_id}/outputs/greeting.txt?view=1")
    assert shown.status_code == 200 and shown.content == one.content
    assert shown.headers["content-disposition"].startswith("inline")
    assert shown.headers["content-type"] == "text/plain; charset=utf-8"
    assert shown.headers["x-content-type-options"] == "nosniff"
    assert shown.headers["content-security-policy"].startswith("sandbox;")
    page = browser.get(f"/jobs/{job_id}").text
    assert f'href="/jobs/{job_id}/outputs/greeting.txt?view=1"' in page


def test_only_images_and_text_open_in_the_browser_never_markup(
    browser: TestClient, admin: Account, settings: Settings
) -> None:
    write_app(
        settings.effective_apps_dir,
        "pages",
        [
            "sh",
            "-c",
            'echo \'<script>alert(1)</script>\' > "$0/page.html"; cp "$0/page.html" "$0/pic.svg"',
            "{output}",
        ],
    )
    browser.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    job_id = browser.post("/api/v1/jobs", json={"app": "pages"}, headers=admin.headers).json()["id"]
    assert wait_for_end(browser, job_id, admin.headers)["state"] == "succeeded"
    for name in ("page.html", "pic.svg"):
        r = browser.get(f"/jobs/{job_id}/outputs/{name}?view=1")
        assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment"), name
    page = browser.get(f"/jobs/{job_id}").text
    assert "?view=1" not in page


def test_user_content_is_escaped_everywhere(
    browser: TestClient, admin: Account, user_browser: TestClient
) -> None:
    upload(browser, admin, "x/<img src=x onerror=alert(1)>.csv", b"1\n")
    r = browser.post("/api/v1/jobs", json={"app": "hello", "name": XSS}, headers=admin.headers)
    job_id = r.json()["id"]
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/jobs/rows"):
        html = browser.get(path).text
        assert XSS not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    files_page = browser.get("/files?path=x").text
    assert "<img src=x" not in files_page
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in files_page
    picker = browser.get("/apps/spikes").text
    assert "<img src=x" not in picker


def test_admin_pages_are_forbidden_to_other_users(user_browser: TestClient, user: Account) -> None:
    for path in ("/admin/users", "/admin/apps"):
        r = user_browser.get(path)
        assert r.status_code == 403
        assert "text/html" in r.headers["content-type"]
        assert "for administrators" in r.text
    html = user_browser.get("/").text
    assert 'href="/admin/users"' not in html
    r = user_browser.post("/admin/users", data={"csrf_token": csrf_of(html), "email": "x@example.org"})
    assert r.status_code == 403


def test_other_users_jobs_are_not_found(
    browser: TestClient, admin: Account, user_browser: TestClient
) -> None:
    job_id = browser.post("/api/v1/jobs", json={"app": "hello"}, headers=admin.headers).json()["id"]
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/status", f"/jobs/{job_id}/outputs.zip"):
        r = user_browser.get(path)
        assert r.status_code == 404, path
        assert "text/html" in r.headers["content-type"]


def test_errors_are_pages_for_browsers_and_problems_for_the_api(browser: TestClient) -> None:
    page = browser.get("/no/such/page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
    api = browser.get("/api/v1/no-such", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    bad_id = browser.get("/jobs/not-a-uuid")
    assert bad_id.status_code == 404 and "text/html" in bad_id.headers["content-type"]
    icon = browser.get("/favicon.ico")  # every browser asks for it, logged in or not
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg") and 'rel="icon"' in browser.get("/").text


# ------------------------------------------------------------------------------------------ projects


def project_page(browser: TestClient, slug: str) -> str:
    r = browser.get(f"/projects/{slug}")
    assert r.status_code == 200, r.text[:500]
    return r.text


def member_row(html: str, email: str) -> str:
    start = html.index(f'data-member="{email}"')
    return html[start : html.index("</tr>", start)]


def create_project(browser: TestClient, name: str, slug: str) -> None:
    html = browser.get("/projects").text
    r = browser.post(
        "/projects", data={"csrf_token": csrf_of(html), "name": name, "slug": slug}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/projects/{slug}", r.text


def add_member(browser: TestClient, slug: str, email: str, role: str) -> Any:
    html = project_page(browser, slug)
    return browser.post(
        f"/projects/{slug}/members", data={"csrf_token": csrf_of(html), "email": email, "role": role}
    )


def test_projects_are_created_with_errors_by_field_and_do_not_exist_for_outsiders(
    app: Any, make_user: Any
) -> None:
    owner, outsider = make_user(), make_user()
    browser, other = (
        browser_login(app, owner.email, owner.password),
        browser_login(app, outsider.email, outsider.password),
    )
    html = browser.get("/projects").text
    assert re.search(r'<tr data-project="user-[0-9a-f]+">\s*<td><a href="/projects/user-', html)
    bad = browser.post("/projects", data={"csrf_token": csrf_of(html), "name": " ", "slug": "Bad Slug!"})
    assert bad.status_code == 422 and "The project was not created" in bad.text
    assert re.search(r'data-error-for="name">a name of 1 to 200', bad.text)  # every error at once
    assert re.search(r'data-error-for="slug">3 to 40 lower-case', bad.text)
    assert 'value="Bad Slug!"' in bad.text
    create_project(browser, XSS, "vision")
    page = project_page(browser, "vision")
    assert XSS not in page and "&lt;script&gt;" in page and 'id="your-role">owner<' in page
    taken = browser.post("/projects", data={"csrf_token": csrf_of(html), "name": "Again", "slug": "vision"})
    assert taken.status_code == 409 and re.search(
        r'data-error-for="slug">A project with the slug', taken.text
    )
    listing = browser.get("/projects").text
    assert listing.index("(personal)") < listing.index('data-project="vision"')  # personal first

    # to anyone without a role in it, the project is not there, and nor are its forms
    for r in (
        other.get("/projects/vision"),
        other.post(
            "/projects/vision/members",
            data={"csrf_token": csrf_of(other.get("/").text), "email": outsider.email},
        ),
        other.get("/jobs?project=vision"),
    ):
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert 'data-project="vision"' not in other.get("/projects").text


def test_managers_handle_members_and_join_codes_and_anyone_may_leave(app: Any, make_user: Any) -> None:
    owner, manager, member, joiner = (make_user() for _ in range(4))
    browser = browser_login(app, owner.email, owner.password)
    create_project(browser, "Vision", "vision")
    unknown = add_member(browser, "vision", "nobody@example.org", "member")
    assert unknown.status_code == 422 and re.search(r'data-error-for="email">there is no user', unknown.text)
    assert add_member(browser, "vision", manager.email, "manager").status_code == 200
    as_manager = browser_login(app, manager.email, manager.password)
    assert add_member(as_manager, "vision", member.email, "member").status_code == 200

    # a manager is offered (and allowed) only viewers and members; the owners' rows have no controls
    html = project_page(as_manager, "vision")
    assert '<option value="owner"' not in html and "Make a new join code" in html
    assert "Change role" not in member_row(html, owner.email)
    refused = add_member(as_manager, "vision", member.email, "owner")
    assert refused.status_code == 403 and re.search(r'data-error-for="role">Only the project', refused.text)
    row = member_row(html, member.email)
    change = re.search(r'action="(/projects/vision/members/[^"/]+)"', row)
    assert change
    r = as_manager.post(change.group(1), data={"csrf_token": csrf_of(html), "role": "viewer"})
    assert r.status_code == 200 and "data-role>viewer<" in member_row(r.text, member.email)

    # a join code is shown once, with its expiry, and lets a signed-in user join as a member
    r = as_manager.post("/projects/vision/join-code", data={"csrf_token": csrf_of(html), "days": "999"})
    assert r.status_code == 422 and re.search(r'data-error-for="days">from 1 to 365 days', r.text)
    r = as_manager.post("/projects/vision/join-code", data={"csrf_token": csrf_of(html), "days": "7"})
    assert r.status_code == 201
    code = re.search(r'value="([^"]+)" id="join-code-value"', r.text)
    assert code and "can join as a member until <time" in r.text
    assert code.group(1) not in project_page(as_manager, "vision")
    newcomer = browser_login(app, joiner.email, joiner.password)
    listing = newcomer.get("/projects").text
    wrong = newcomer.post("/projects/join", data={"csrf_token": csrf_of(listing), "code": "vision-nope"})
    assert wrong.status_code == 404 and re.search(
        r'data-error-for="code">That join code is not valid', wrong.text
    )
    joined = newcomer.post("/projects/join", data={"csrf_token": csrf_of(listing), "code": code.group(1)})
    assert joined.status_code == 200 and 'id="your-role">member<' in joined.text
    assert "Make a new join code" not in joined.text and "Change role" not in joined.text
    html = project_page(as_manager, "vision")
    as_manager.post("/projects/vision/join-code/remove", data={"csrf_token": csrf_of(html)})
    assert "No join code works now" in project_page(as_manager, "vision")

    # a manager removes a member; a member leaves; the project is then gone for them
    remove = re.search(r'action="(/projects/vision/members/[^"]+/remove)"', member_row(html, member.email))
    assert remove
    r = as_manager.post(remove.group(1), data={"csrf_token": csrf_of(html)})
    assert f'data-member="{member.email}"' not in r.text and "is no longer a member" in r.text
    r = newcomer.post("/projects/vision/leave", data={"csrf_token": csrf_of(listing)})
    assert r.status_code == 200 and "You left Vision" in r.text and 'data-project="vision"' not in r.text
    assert newcomer.get("/projects/vision").status_code == 404


def test_a_member_runs_a_job_in_a_project_that_its_viewers_see_read_only(
    app: Any, make_user: Any, settings: Settings, admin: Account
) -> None:
    write_app(settings.effective_apps_dir, "nap", ["sleep", "30"])
    owner, member, viewer, outsider = (make_user() for _ in range(4))
    as_owner = browser_login(app, owner.email, owner.password)
    create_project(as_owner, "Vision", "vision")
    add_member(as_owner, "vision", member.email, "member")
    add_member(as_owner, "vision", viewer.email, "viewer")
    as_member, as_viewer = (
        browser_login(app, member.email, member.password),
        browser_login(app, viewer.email, viewer.password),
    )

    # the chooser offers the projects where one may run jobs, the personal one chosen
    form = as_member.get("/apps/nap").text
    chooser = form[
        form.index('<select id="f-project"') : form.index("</select>", form.index('id="f-project"'))
    ]
    assert re.search(r'<option value="user-[0-9a-f]+" selected>Test User \(personal\)</option>', chooser)
    assert '<option value="vision" >Vision</option>' in chooser
    viewer_form = as_viewer.get("/apps/nap").text
    assert 'value="vision"' not in viewer_form
    r = as_viewer.post("/apps/nap/run", data={"csrf_token": csrf_of(viewer_form), "project": "vision"})
    assert r.status_code == 422 and re.search(r'data-error-for="project">Your role in project', r.text)

    r = as_member.post(
        "/apps/nap/run", data={"csrf_token": csrf_of(form), "project": "vision"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    job_url = r.headers["location"]
    job = as_member.get("/api/v1/jobs", headers=member.headers).json()["items"][0]
    assert job_url == f"/jobs/{job['id']}" and job["project"] == "vision"
    # the chosen project's quota refuses the next one: the form says so next to the chooser
    quota = {"limit": 0, "period": "daily"}
    r = as_owner.put("/api/v1/projects/vision/quotas/jobs_per_day", json=quota, headers=admin.headers)
    assert r.status_code == 200, r.text
    r = as_member.post("/apps/nap/run", data={"csrf_token": csrf_of(form), "project": "vision"})
    assert r.status_code == 409 and re.search(
        r'data-error-for="project">Project &#39;vision&#39; has 0', r.text
    )

    # everyone in the project reads the job's page; only its owner and managers get a cancel button
    for who, cancels in ((as_member, True), (as_owner, True), (as_viewer, False)):
        page = who.get(job_url)
        assert page.status_code == 200
        assert '<a href="/projects/vision" id="job-project">Vision</a>' in page.text
        assert ('id="cancel-job"' in page.text) is cancels
    assert "run by Test User" in as_viewer.get(job_url).text
    assert as_viewer.post(f"{job_url}/cancel", data={"csrf_token": csrf_of(viewer_form)}).status_code == 403
    assert browser_login(app, outsider.email, outsider.password).get(job_url).status_code == 404

    # the jobs list: your own by default; a project's, everyone's, when chosen; each with its project
    assert job["id"] not in as_viewer.get("/jobs").text
    listing = as_viewer.get("/jobs?project=vision").text
    assert '<option value="vision" selected>Vision</option>' in listing
    row = listing[listing.index(f'data-job="{job["id"]}"') :]
    assert '<td data-project><a href="/projects/vision">Vision</a></td>' in row
    assert 'hx-get="/jobs/rows?project=vision"' in listing  # the polls keep the filter

    r = as_owner.post(f"{job_url}/cancel", data={"csrf_token": csrf_of(as_owner.get(job_url).text)})
    assert r.status_code == 200 and "Cancel requested." in r.text
    assert wait_for_end(as_member, job["id"], member.headers)["state"] == "cancelled"
    assert 'id="rerun-job"' in as_member.get(job_url).text  # a rerun needs a role that runs jobs
    assert 'id="rerun-job"' not in as_viewer.get(job_url).text
    r = as_viewer.post(f"{job_url}/rerun", data={"csrf_token": csrf_of(viewer_form)})
    assert r.status_code == 200 and "It could not start again: Your role in project" in r.text


# ------------------------------------------------------------------------ quotas, requests and usage


def quota_item(html: str, resource: str) -> str:
    start = html.index(f'data-quota="{resource}"')
    return html[start : html.index("</li>", start)]


def request_row(html: str) -> str:
    start = html.index("data-request=")
    return html[start : html.index("</tr>", start)]


def run_in(client: TestClient, who: Account, project: str) -> dict[str, Any]:
    r = client.post(
        "/api/v1/jobs", json={"app": "hello", "params": {"times": 1}, "project": project}, headers=who.headers
    )
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def test_quotas_show_as_bars_with_their_numbers_in_words_and_admins_set_them_on_the_page(
    app: Any, client: TestClient, make_user: Any
) -> None:
    owner = make_user()
    as_owner, as_admin = (
        browser_login(app, owner.email, owner.password),
        browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD),
    )
    personal = project_page(as_owner, "personal")  # one's personal project has its budget too
    assert "This project has no quotas" in personal and 'id="usage"' in personal
    create_project(as_owner, "Budget", "budget")
    html = project_page(as_owner, "budget")
    assert "This project has no quotas" in html and "Set a quota" not in html and 'id="ask"' not in html

    # an admin sets a quota on the page: every bad field at once, what was typed kept, nothing set
    page = project_page(as_admin, "budget")
    form = {
        "csrf_token": csrf_of(page),
        "resource": "jobs_per_day",
        "limit": "lots",
        "period": "allocation",
        "starts_at": "2030-02-01",
        "ends_at": "2030-01-01",
    }
    r = as_admin.post("/projects/budget/quotas", data=form)
    assert r.status_code == 422 and 'id="quota-errors"' in r.text
    assert re.search(r'data-error-for="limit">a number from 0 up', r.text)
    assert re.search(r'data-error-for="ends_at">an allocation needs starts_at before ends_at', r.text)
    assert 'value="lots"' in r.text and 'value="2030-02-01"' in r.text
    assert "This project has no quotas" in r.text
    daily = {**form, "limit": "5", "period": "daily", "starts_at": "", "ends_at": ""}
    r = as_admin.post("/projects/budget/quotas", data=daily, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/projects/budget#quotas", r.text
    assert (
        as_owner.post("/projects/budget/quotas", data={**daily, "csrf_token": csrf_of(html)}).status_code
        == 403
    )

    # a bar per quota, its numbers in words, its period and when it resets; a warning from 80%
    for _ in range(4):
        run_in(client, owner, "budget")
    item = quota_item(project_page(as_owner, "budget"), "jobs_per_day")
    assert 'data-level="warning"' in item and "Warning: 80% or more" in item
    assert (
        '<meter id="quota-jobs_per_day" min="0" max="100" low="79.99" high="99.99" optimum="0" value="80.0"'
        in item
    )
    assert (
        'aria-labelledby="quota-jobs_per_day-title"' in item and 'aria-valuetext="80% used or held"' in item
    )
    assert "4 of 5 jobs used or held (80%)" in item and "<strong>1 left</strong>" in item
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert re.search(rf'Daily:.*next at <time datetime="{tomorrow}T00:00:00\+00:00"', item)
    run_in(client, owner, "budget")
    item = quota_item(project_page(as_owner, "budget"), "jobs_per_day")
    assert 'data-level="exceeded"' in item and "Exceeded: nothing left" in item and "5 of 5 jobs" in item

    # an allocation shows its dates, and that it gives nothing outside them; admins remove quotas
    ended = {
        **form,
        "resource": "cpu_hours",
        "limit": "100",
        "starts_at": "2020-01-01",
        "ends_at": "2021-01-01",
    }
    as_admin.post("/projects/budget/quotas", data=ended)
    item = quota_item(project_page(as_owner, "budget"), "cpu_hours")
    assert 'An allocation from <time datetime="2020-01-01T00:00:00+00:00"' in item
    assert "It has ended: it gives nothing any more." in item and "Remove" not in item
    r = as_admin.post("/projects/budget/quotas/cpu_hours/remove", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "The cpu_hours quota is removed" in r.text
    assert 'data-quota="cpu_hours"' not in r.text and 'data-quota="jobs_per_day"' in r.text


def test_members_ask_for_more_and_managers_decide_on_the_project_page(
    app: Any, client: TestClient, admin: Account, make_user: Any
) -> None:
    owner, member, viewer = make_user(), make_user(), make_user()
    as_owner = browser_login(app, owner.email, owner.password)
    create_project(as_owner, "Asks", "asks")
    add_member(as_owner, "asks", member.email, "member")
    add_member(as_owner, "asks", viewer.email, "viewer")
    quota = client.put("/api/v1/projects/asks/quotas/cpu_hours", json={"limit": 10}, headers=admin.headers)
    assert quota.status_code == 200, quota.text
    as_member, as_viewer = (
        browser_login(app, member.email, member.password),
        browser_login(app, viewer.email, viewer.password),
    )
    assert 'id="ask"' not in project_page(as_viewer, "asks")  # viewers run nothing, so ask for nothing
    page = project_page(as_member, "asks")
    assert 'id="ask"' in page and 'id="settings"' not in page

    # every bad field at once, next to it, what was typed kept (and escaped)
    ask = {"csrf_token": csrf_of(page), "resource": "gpu_hours", "amount": "-1", "justification": "<b>"}
    bad = as_member.post("/projects/asks/quota-requests", data=ask)
    assert bad.status_code == 422 and 'id="ask-errors"' in bad.text
    assert re.search(r'data-error-for="resource">project &#39;asks&#39; has no gpu_hours quota', bad.text)
    assert re.search(r'data-error-for="amount">a number above 0', bad.text)
    assert re.search(r'data-error-for="justification">say why', bad.text)
    assert "<b>" not in bad.text and ">&lt;b&gt;</textarea>" in bad.text
    why = f"the spring imaging campaign {XSS}"
    r = as_member.post(
        "/projects/asks/quota-requests",
        data={**ask, "resource": "cpu_hours", "amount": "15", "justification": why},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/projects/asks#requests", r.text
    page = as_member.get("/projects/asks").text
    assert "You asked for 15 CPU-hours more of cpu_hours" in page and XSS not in page
    row = request_row(page)
    assert 'data-state="pending"' in row and "the spring imaging campaign &lt;script&gt;" in row
    assert "Approve" not in row  # the member does not decide
    owner_page = project_page(as_owner, "asks")
    action = re.search(r'action="(/projects/asks/quota-requests/[^"]+)"', request_row(owner_page))
    assert action
    decision = {"csrf_token": csrf_of(owner_page), "decision": "approve"}
    refused = as_member.post(action.group(1), data={**decision, "csrf_token": csrf_of(page)})
    assert refused.status_code == 403

    # an owner approves with a note: the limit grows; a decision is taken once
    r = as_owner.post(action.group(1), data={**decision, "note": f"granted {XSS}"})
    assert r.status_code == 200 and "Approved: 15 CPU-hours more of cpu_hours" in r.text
    row = request_row(r.text)
    assert 'data-state="approved"' in row and "<span data-note>granted &lt;script&gt;" in row
    assert "Approve" not in row and "0 of 25 CPU-hours used or held" in quota_item(r.text, "cpu_hours")
    again = as_owner.post(action.group(1), data={**decision, "decision": "reject"})
    assert 'class="flash bad"' in again.text and "That request was approved already." in again.text

    # an admin who is no member decides too
    as_member.post(
        "/projects/asks/quota-requests",
        data={**ask, "resource": "cpu_hours", "amount": "5", "justification": "one more round of fits"},
    )
    as_admin = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin_page = project_page(as_admin, "asks")
    action = re.search(r'action="(/projects/asks/quota-requests/[^"]+)"', request_row(admin_page))
    assert action
    rejection = {"csrf_token": csrf_of(admin_page), "decision": "reject", "note": "not this month"}
    r = as_admin.post(action.group(1), data=rejection)
    assert "Rejected: 5 CPU-hours more of cpu_hours." in r.text
    assert 'data-state="rejected"' in request_row(r.text)
    assert "of 25 CPU-hours" in quota_item(r.text, "cpu_hours")


def test_usage_per_user_app_and_month_as_a_table_a_chart_and_csv_and_the_managers_settings(
    app: Any, client: TestClient, make_user: Any
) -> None:
    owner, viewer = make_user(), make_user()
    as_owner = browser_login(app, owner.email, owner.password)
    create_project(as_owner, "Lab", "lab")
    add_member(as_owner, "lab", viewer.email, "viewer")
    job = run_in(client, owner, "lab")
    assert wait_for_end(client, job["id"], owner.headers)["state"] == "succeeded"

    as_viewer = browser_login(app, viewer.email, viewer.password)
    html = project_page(as_viewer, "lab")
    usage = html[html.index('id="usage"') :]
    assert f'<tr data-usage="{owner.email}">' in usage and '<option value="user" selected>' in usage
    chart = usage[usage.index("<svg") : usage.index("</svg>")]
    assert 'role="img"' in chart and "<title" in chart and f">{owner.email}</text>" in chart
    assert 'class="bar"' in chart and "style=" not in chart  # (no inline style: the CSP forbids it)
    assert '<a href="/projects/lab/usage.csv?by=user&amp;months=6" download' in usage
    by_app = as_viewer.get("/projects/lab", params={"by": "app", "months": "1"}).text
    assert '<tr data-usage="hello">' in by_app and '<option value="1" selected>this month</option>' in by_app
    by_month = as_viewer.get("/projects/lab", params={"by": "month"}).text
    assert f'<tr data-usage="{datetime.now(UTC):%Y-%m}">' in by_month
    csv = as_viewer.get("/projects/lab/usage.csv", params={"by": "app", "months": "3"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"].startswith('attachment; filename="lab-usage-by-app-since-')
    lines = csv.text.splitlines()
    assert lines[0] == "app,attempts,cpu_hours,gpu_hours,wall_hours,peak_memory_mb" and lines[1].startswith(
        "hello,1,"
    )
    wrong = as_viewer.get("/projects/lab", params={"by": "project", "months": "7"})
    assert wrong.status_code == 422 and "by: one of user, app, month, executor" in wrong.text
    assert "months: one of 1, 3, 6, 12" in wrong.text

    # managers rename, describe and choose what a job beyond a time quota gets; others are refused
    assert 'id="settings"' not in html
    page = project_page(as_owner, "lab")
    settings = {"csrf_token": csrf_of(page), "name": " ", "description": "retina", "over_quota": "maybe"}
    r = as_owner.post("/projects/lab/settings", data=settings)
    assert r.status_code == 422 and 'id="settings-errors"' in r.text
    assert re.search(r'data-error-for="name">a name of 1 to 200', r.text)
    assert re.search(r'data-error-for="over_quota">refuse or cut', r.text)
    assert "<h1>Lab</h1>" in r.text  # nothing was saved
    r = as_owner.post("/projects/lab/settings", data={**settings, "name": f"Lab {XSS}", "over_quota": "cut"})
    assert r.status_code == 200 and "The project&#39;s settings are saved." in r.text
    assert XSS not in r.text and '<input type="radio" name="over_quota" value="cut" checked>' in r.text
    saved = client.get("/api/v1/projects/lab", headers=owner.headers).json()
    assert (saved["name"], saved["description"], saved["over_quota"]) == (f"Lab {XSS}", "retina", "cut")
    assert (
        as_viewer.post("/projects/lab/settings", data={**settings, "csrf_token": csrf_of(html)}).status_code
        == 403
    )


# ------------------------------------------------------------------------------------ account, admin


def test_api_token_secret_is_shown_once_and_can_be_revoked(browser: TestClient) -> None:
    html = browser.get("/account").text
    r = browser.post(
        "/account/tokens", data={"csrf_token": csrf_of(html), "name": "laptop", "scopes": ["read"]}
    )
    assert r.status_code == 201
    secret = re.search(r'value="(lc_[^"]+)" id="token-secret"', r.text)
    assert secret
    assert (
        browser.get("/api/v1/me", headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code == 200
    )
    again = browser.get("/account").text
    assert "laptop" in again and secret.group(1) not in again
    revoke = re.search(r'action="(/account/tokens/[^/]+/revoke)"', again)
    assert revoke
    browser.post(revoke.group(1), data={"csrf_token": csrf_of(again)})
    assert (
        browser.get("/api/v1/me", headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code == 401
    )

    missing = browser.post("/account/tokens", data={"csrf_token": csrf_of(again), "name": " "})
    assert missing.status_code == 422 and "give the token a name" in missing.text


def test_password_change_keeps_this_session_and_reports_errors_by_field(
    user_browser: TestClient, user: Account
) -> None:
    html = user_browser.get("/account").text
    wrong = user_browser.post(
        "/account/password",
        data={"csrf_token": csrf_of(html), "current_password": "nope", "new_password": "long-enough-1"},
    )
    assert wrong.status_code == 422 and "the current password is not correct" in wrong.text
    short = user_browser.post(
        "/account/password",
        data={"csrf_token": csrf_of(html), "current_password": user.password, "new_password": "short"},
    )
    assert short.status_code == 422 and "at least 10 characters" in short.text
    ok = user_browser.post(
        "/account/password",
        data={
            "csrf_token": csrf_of(html),
            "current_password": user.password,
            "new_password": "long-enough-1",
        },
    )
    assert ok.status_code == 200 and "Your password is changed" in ok.text
    assert user_browser.get("/account").status_code == 200


def test_admins_see_every_users_queue_with_why_jobs_wait_and_cancel_them(
    browser: TestClient, client: TestClient, admin: Account, user: Account, settings: Settings
) -> None:
    write_app(  # (it waits for the test to open its gate, a file in its own work folder)
        settings.effective_apps_dir,
        "hold",
        ["sh", "-c", "while [ ! -e open ]; do sleep 0.05; done"],
        resources={"cpus": settings.local_cpus or 2, "memory_mb": 64, "timeout_s": 120},
    )
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]
    try:
        first = client.post("/api/v1/jobs", json={"app": "hold"}, headers=user.headers).json()
        eventually(
            lambda: (
                client.get(f"/api/v1/jobs/{first['id']}", headers=user.headers).json()["state"] == "running"
            ),
            30,
            "the first job to run",
        )
        second = client.post("/api/v1/jobs", json={"app": "hold"}, headers=user.headers).json()
        page = browser.get("/admin/jobs")
        assert page.status_code == 200 and 'href="/admin/jobs" aria-current="page"' in page.text
        rows = {j: page.text[page.text.index(f'data-job="{j}"') :] for j in (first["id"], second["id"])}
        rows = {j: r[: r.index("</tr>")] for j, r in rows.items()}
        assert user.email in rows[first["id"]] and "running" in rows[first["id"]]
        assert "capacity" in rows[second["id"]] and "hold #2" in rows[second["id"]]  # why it waits
        assert f'action="/admin/jobs/{second["id"]}/cancel"' in rows[second["id"]]
        r = browser.post(
            f"/admin/jobs/{second['id']}/cancel",
            data={"csrf_token": csrf_of(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/admin/jobs"
        assert client.get(f"/api/v1/jobs/{second['id']}", headers=user.headers).json()["state"] == "cancelled"
        assert second["id"] not in browser.get("/admin/jobs/rows").text  # the queue: waiting and running only
        assert second["id"] in browser.get("/admin/jobs?view=ended").text
        # the API's view of everyone's jobs, for admins only
        everyone = client.get("/api/v1/jobs?everyone=true&limit=100", headers=admin.headers).json()["items"]
        assert {first["id"], second["id"]} <= {j["id"] for j in everyone}
        assert client.get("/api/v1/jobs?everyone=true", headers=user.headers).status_code == 403
    finally:
        (settings.home / "jobs" / first["id"] / "attempt-1" / "work" / "open").touch()
    assert wait_for_end(client, first["id"], user.headers)["state"] == "succeeded"


def test_admin_pages_about_jobs_are_for_admins_only(user_browser: TestClient, user: Account) -> None:
    assert user_browser.get("/admin/jobs").status_code == 403
    csrf = csrf_of(user_browser.get("/").text)
    r = user_browser.post(f"/admin/jobs/{uuid.uuid4()}/cancel", data={"csrf_token": csrf})
    assert r.status_code == 403


def test_admins_rename_limit_and_reset_a_user_who_then_chooses_their_own_password(
    browser: TestClient, client: TestClient, app: Any, user: Account
) -> None:
    page = browser.get("/admin/users").text
    assert f'href="/admin/users/{user.id}"' in page
    page = browser.get(f"/admin/users/{user.id}").text
    csrf = {"csrf_token": csrf_of(page)}
    bad = browser.post(
        f"/admin/users/{user.id}/profile", data={**csrf, "name": "Ada", "storage_limit": "lots"}
    )
    assert bad.status_code == 422 and 'data-error-for="storage_limit">a number of megabytes' in bad.text
    r = browser.post(
        f"/admin/users/{user.id}/profile",
        data={**csrf, "name": "Ada Lovelace", "storage_limit": "1.5"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    me = client.get("/api/v1/me", headers=user.headers).json()
    assert me["name"] == "Ada Lovelace" and me["storage_limit_bytes"] == int(1.5 * 1024 * 1024)
    browser.post(
        f"/admin/users/{user.id}/profile", data={**csrf, "name": "Ada Lovelace", "storage_limit": ""}
    )
    assert client.get("/api/v1/me", headers=user.headers).json()["storage_limit_bytes"] is None
    # a reset: a new password shown once; the user's sessions end; at their login they choose their own
    own = browser_login(app, user.email, user.password)
    r = browser.post(f"/admin/users/{user.id}/password", data={**csrf, "how": "generate"})
    password = re.search(r'<input type="text" readonly value="([^"]+)" id="issued-password"', r.text)
    assert password, r.text
    assert own.get("/files", follow_redirects=False).headers["location"].startswith("/login")
    own = browser_login(app, user.email, password.group(1))
    for path in ("/", "/files", "/apps/hello", "/jobs"):
        r = own.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/account#password", path
    poll = own.get("/jobs/rows", headers={"HX-Request": "true"}, follow_redirects=False)
    assert poll.headers["HX-Redirect"] == "/account#password"
    account = own.get("/account")
    assert account.status_code == 200 and 'id="choose-password"' in account.text
    r = own.post(
        "/account/password",
        data={
            "csrf_token": csrf_of(account.text),
            "current_password": password.group(1),
            "new_password": "my-very-own-password",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert own.get("/files").status_code == 200 and 'id="choose-password"' not in own.get("/account").text


def test_admin_invites_promotes_and_deactivates(browser: TestClient, app: Any) -> None:
    html = browser.get("/admin/users").text
    r = browser.post(
        "/admin/users", data={"csrf_token": csrf_of(html), "email": "new@example.org", "name": XSS}
    )
    assert r.status_code == 201
    assert XSS not in r.text
    password = re.search(r'value="([^"]+)" id="invited-password"', r.text)
    assert password
    newcomer = browser_login(app, "new@example.org", password.group(1))
    assert newcomer.get("/").status_code == 200

    page = browser.get("/admin/users").text
    row = page[page.index('data-user="new@example.org"') :]
    action = re.search(r'action="(/admin/users/[^"]+)"', row)
    assert action
    browser.post(action.group(1), data={"csrf_token": csrf_of(page), "action": "promote"})
    browser.post(action.group(1), data={"csrf_token": csrf_of(page), "action": "deactivate"})
    assert newcomer.get("/", follow_redirects=False).status_code == 303  # its session ended

    dup = browser.post("/admin/users", data={"csrf_token": csrf_of(page), "email": "new@example.org"})
    assert dup.status_code == 409 and "already exists" in dup.text


def test_registry_page_shows_files_that_failed_to_load(browser: TestClient, settings: Any) -> None:
    settings.effective_apps_dir.mkdir(parents=True, exist_ok=True)
    (settings.effective_apps_dir / "broken.yaml").write_text("name: broken\nversions: [\n")
    html = browser.get("/admin/apps").text
    assert "broken.yaml" in html and "Every app file loaded" not in html


# ------------------------------------------------------------------------------------------- workers


def register_worker(browser: TestClient, name: str, labels: str = "") -> tuple[str, str]:
    """Register through the form: (the worker token, the page that showed it)."""
    html = browser.get("/admin/workers").text
    r = browser.post("/admin/workers", data={"csrf_token": csrf_of(html), "name": name, "labels": labels})
    assert r.status_code == 201, r.text
    token = re.search(r'value="(lcw_[^"]+)" id="worker-token"', r.text)
    assert token, "the token is not on the page"
    return token.group(1), r.text


def heartbeat(client: TestClient, token: str) -> None:
    body = {
        "capacity": {"cpus": 4, "memory_mb": 8192, "gpus": 1},
        "free": {"cpus": 3, "memory_mb": 6144, "gpus": 1},
        "telemetry": {"load1": 0.25, "load5": 0.5, "load15": 0.75, "disk_free_bytes": 5 * 2**30},
        "version": "9.9",
    }
    r = client.post("/api/v1/worker/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def worker_row(html: str, name: str) -> str:
    start = html.index(f'data-worker="{name}"')
    return html[start : html.index("</tr>", start)]


def api_worker(client: TestClient, admin: Account, name: str) -> dict[str, Any]:
    items = client.get("/api/v1/workers", headers=admin.headers).json()["items"]
    found: dict[str, Any] = next(w for w in items if w["name"] == name)
    return found


def test_admin_registers_a_worker_and_sees_its_token_once(
    browser: TestClient, client: TestClient, admin: Account
) -> None:
    assert 'href="/admin/workers"' in browser.get("/admin/users").text
    token, shown = register_worker(browser, "rig-1", "platform=spinnaker\n\n gpu = a100 \n")
    assert f"LABCLOUD_WORKER_TOKEN={token} labcloud worker --server http://testserver" in shown
    assert 'data-copy="#worker-token"' in shown and 'data-copy="#worker-command"' in shown
    assert 'data-worker="rig-1"' in shown
    assert api_worker(client, admin, "rig-1")["labels"] == {"platform": "spinnaker", "gpu": "a100"}

    page = browser.get("/admin/workers").text
    assert token not in page
    row = worker_row(page, "rig-1")
    assert 'data-state="waiting"' in row and "waiting for first connection" in row  # not yet heard from
    assert "never" in row and "lost" not in row
    assert "platform=spinnaker" in row and "gpu=a100" in row
    assert 'hx-get="/admin/workers/rows"' in page and 'hx-trigger="every 3s"' in page

    heartbeat(client, token)
    rows = browser.get("/admin/workers/rows")
    assert rows.status_code == 200 and "<html" not in rows.text and token not in rows.text
    row = worker_row(rows.text, "rig-1")
    assert '<span class="badge ok" data-state="active">active</span>' in row
    assert "<time datetime=" in row and "v9.9" in row
    text = " ".join(re.sub(r"<[^>]+>", " ", row).split())
    assert "4 CPUs · 8.0 GiB · 1 GPU free: 3 CPUs · 6.0 GiB · 1 GPU" in text
    assert "load 0.25 / 0.5 / 0.75" in text and "5.0 GiB disk free" in text
    assert ">Drain<" in row and "Revoke its token now" in row

    dup = browser.post("/admin/workers", data={"csrf_token": csrf_of(page), "name": "rig-1"})
    assert dup.status_code == 409 and "A worker named &#39;rig-1&#39; exists" in dup.text
    assert 'id="worker-token"' not in dup.text
    bad = browser.post(
        "/admin/workers", data={"csrf_token": csrf_of(page), "name": "rig-2", "labels": "no equals sign"}
    )
    assert bad.status_code == 422
    assert re.search(r'id="worker-labels-help"><p class="error">line 1: write labels as key=value', bad.text)
    assert "no equals sign</textarea>" in bad.text  # what was typed stays
    assert [w["name"] for w in client.get("/api/v1/workers", headers=admin.headers).json()["items"]] == [
        "rig-1"
    ]


def test_drain_and_revoke_change_the_worker_state(
    browser: TestClient, client: TestClient, admin: Account, settings: Any
) -> None:
    write_app(settings.effective_apps_dir, "board", ["sleep", "60"], labels={"platform": "spinnaker"})
    token, _ = register_worker(browser, "board-1", "platform=spinnaker")
    heartbeat(client, token)
    job = client.post("/api/v1/jobs", json={"app": "board"}, headers=admin.headers).json()
    claim = client.post(
        "/api/v1/worker/claim",
        json={"free": {"cpus": 4, "memory_mb": 8192}, "wait_s": 0},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert claim.status_code == 200 and claim.json()["job"]["id"] == job["id"], claim.text
    page = browser.get("/admin/workers").text
    assert f'href="/jobs/{job["id"]}"' in worker_row(page, "board-1")

    drain = re.search(r'action="(/admin/workers/[^"]+/drain)"', worker_row(page, "board-1"))
    assert drain
    r = browser.post(drain.group(1), data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/workers"
    assert api_worker(client, admin, "board-1")["state"] == "draining"
    page = browser.get("/admin/workers").text
    assert "board-1 is draining" in page
    row = worker_row(page, "board-1")
    assert 'data-state="draining"' in row and ">Drain<" not in row  # no second drain
    assert f'href="/jobs/{job["id"]}"' in row  # its job goes on

    revoke = re.search(r'action="(/admin/workers/[^"]+/revoke)"', row)
    assert revoke
    assert "<details" in row and "<summary>Revoke" in row  # a second step, no script dialog
    r = browser.post(revoke.group(1), data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303
    revoked = api_worker(client, admin, "board-1")
    assert revoked["state"] == "revoked" and revoked["running_jobs"] == []
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=admin.headers).json()["state"] == "queued"
    r = client.post("/api/v1/worker/heartbeat", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    page = browser.get("/admin/workers").text
    row = worker_row(page, "board-1")
    assert '<span class="badge muted" data-state="revoked">revoked</span>' in row
    assert "/revoke" not in row and "/drain" not in row
    # draining a revoked worker is refused with a message, not an error page
    r = browser.post(drain.group(1), data={"csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "This worker was revoked." in r.text
    missing = browser.post(
        "/admin/workers/00000000-0000-0000-0000-000000000000/drain", data={"csrf_token": csrf_of(page)}
    )
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_worker_forms_need_the_csrf_token(
    browser: TestClient, client: TestClient, admin: Account, csrf: str | None
) -> None:
    token, page = register_worker(browser, "csrf-rig")
    heartbeat(client, token)
    data = {} if csrf is None else {"csrf_token": csrf}
    r = browser.post("/admin/workers", data={**data, "name": "sneaky"})
    assert r.status_code == 403 and "did not come from this site" in r.text
    for action in ("drain", "revoke"):
        url = re.search(rf'action="(/admin/workers/[^"]+/{action})"', page)
        assert url
        assert browser.post(url.group(1), data=data).status_code == 403
    assert [
        (w["name"], w["state"]) for w in client.get("/api/v1/workers", headers=admin.headers).json()["items"]
    ] == [("csrf-rig", "active")]


def test_the_workers_page_is_for_admins_only(
    browser: TestClient, user_browser: TestClient, client: TestClient, admin: Account
) -> None:
    _, page = register_worker(browser, "admins-only")
    drain = re.search(r'action="(/admin/workers/[^"]+/drain)"', page)
    assert drain
    for path in ("/admin/workers", "/admin/workers/rows"):
        r = user_browser.get(path)
        assert r.status_code == 403, path
        assert "text/html" in r.headers["content-type"] and "for administrators" in r.text
        assert "admins-only" not in r.text
    csrf = csrf_of(user_browser.get("/").text)
    assert user_browser.post("/admin/workers", data={"csrf_token": csrf, "name": "mine"}).status_code == 403
    assert user_browser.post(drain.group(1), data={"csrf_token": csrf}).status_code == 403
    assert [w["name"] for w in client.get("/api/v1/workers", headers=admin.headers).json()["items"]] == [
        "admins-only"
    ]
    assert api_worker(client, admin, "admins-only")["state"] == "waiting"  # not drained, never heard from


def test_worker_names_and_labels_are_escaped(browser: TestClient, client: TestClient) -> None:
    name = "<svg onload=alert(1)>"  # (a name has no slash: it is part of its device page's address)
    token, shown = register_worker(browser, name, "<b>k</b>=<img src=x onerror=alert(1)>")
    heartbeat(client, token)
    pages = ("/admin/workers", "/admin/workers/rows", "/devices", "/ui/devices/rows")
    for html in (shown, *(browser.get(path).text for path in pages)):
        assert name not in html and "<img src=x" not in html and "<b>k</b>" not in html
        assert "&lt;svg onload=alert(1)&gt;" in html
        assert "&lt;b&gt;k&lt;/b&gt;=&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_new_folder_is_made_from_the_files_page(browser: TestClient, admin: Account) -> None:
    page = browser.get("/files").text
    assert 'action="/files/folder"' in page
    csrf = csrf_of(page)
    r = browser.post(
        "/files/folder", data={"csrf_token": csrf, "inside": "", "name": "raw"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/files?path=raw"
    r = browser.post(
        "/files/folder", data={"csrf_token": csrf, "inside": "raw", "name": "day 1"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/files?path=raw")
    listed = browser.get("/api/v1/files?prefix=raw", headers=admin.headers).json()["items"]
    assert [(e["path"], e["type"]) for e in listed] == [("raw/day 1", "folder")]
    taken = browser.post("/files/folder", data={"csrf_token": csrf, "inside": "", "name": "raw"})
    assert "Could not make the folder: &#39;raw&#39; already exists as a folder." in taken.text
    slash = browser.post("/files/folder", data={"csrf_token": csrf, "inside": "", "name": "a/b"})
    assert "Give the new folder a name (without /)." in slash.text


def test_files_ticked_in_a_folder_are_downloaded_or_deleted_together(
    browser: TestClient, admin: Account, user: Account, user_browser: TestClient
) -> None:
    for path in ("a/1.csv", "a/2.csv", "a/sub/3.csv", "top.txt"):
        upload(browser, admin, path, path.encode())
    upload(user_browser, user, "a/1.csv", b"theirs")
    page = browser.get("/files?path=a").text
    assert '<input type="checkbox" name="path" value="a/sub" form="bulk-files"' in page
    csrf = csrf_of(page)

    def act(action: str, paths: list[str], inside: str = "a") -> Any:
        data = {"csrf_token": csrf, "action": action, "inside": inside, "path": paths}
        return browser.post("/files/bulk", data=data, follow_redirects=False)

    zipped = act("download", ["a/1.csv", "a/sub"])
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert sorted(archive.namelist()) == ["1.csv", "sub/3.csv"] and archive.read("1.csv") == b"a/1.csv"
    top = act("download", ["top.txt", "a"], inside="")
    assert sorted(zipfile.ZipFile(io.BytesIO(top.content)).namelist()) == [
        "a/1.csv",
        "a/2.csv",
        "a/sub/3.csv",
        "top.txt",
    ]
    r = act("delete", ["a/1.csv", "a/sub", "a/nothing.csv"])
    assert r.status_code == 303 and r.headers["location"].startswith("/files?path=a")
    assert "Deleted 2 of 3. Not deleted:" in browser.get("/files?path=a").text
    left = browser.get("/api/v1/files?prefix=a", headers=admin.headers).json()["items"]
    assert [e["path"] for e in left] == ["a/2.csv"]
    theirs = user_browser.get("/api/v1/files?prefix=a", headers=user.headers).json()["items"]
    assert [e["path"] for e in theirs] == ["a/1.csv"]  # another user's file of the same name stays
