"""What a scientist does in the browser, in a real Chromium against a real ``labcloud serve``.

The tests share one server and one logged-in browser and run in order: log in, upload, run the spike
detection demo through its generated form, follow it, look at and download its results, cancel a long
job, create an API token, check that user content never runs as script, and share a project with a
colleague who runs a job in it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

import labcloud_demo
from live_server import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, LiveServer, screenshot

pytestmark = pytest.mark.e2e
SAMPLE_TRACE = Path(labcloud_demo.__file__).parent / "samples" / "trace.csv"
XSS = "<script>alert(1)</script>"
JOB_TIMEOUT_MS = 90_000


def test_log_in(page: Page, context: BrowserContext) -> None:
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fjobs$"))
    screenshot(page, "01-login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("The email or password is not correct.")

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "labcloud_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.goto("/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    screenshot(page, "02-dashboard-empty")


def test_upload_files_with_progress(page: Page, tmp_path: Path) -> None:
    page.goto("/files")
    expect(page.get_by_text("No files yet")).to_be_visible()
    second = tmp_path / "notes.txt"
    second.write_text("a second file\n" * 1000)
    page.locator("#file-picker").set_input_files([str(SAMPLE_TRACE), str(second)])
    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(2)
    for index, path in enumerate((SAMPLE_TRACE, second)):
        item = uploads.nth(index)
        expect(item).to_have_class(re.compile(r"\bdone\b"))
        expect(item.locator(".upload-state")).to_have_text("uploaded")
        bar = item.locator("progress")
        expect(bar).to_have_attribute("max", str(path.stat().st_size))
        assert bar.evaluate("el => el.value === el.max")
    # the listing refreshes by itself
    table = page.locator("#file-table")
    expect(table.get_by_role("link", name="trace.csv", exact=True)).to_be_visible()
    expect(table.get_by_role("link", name="notes.txt", exact=True)).to_be_visible()
    expect(page.locator("#storage-line")).not_to_contain_text("0 B used")  # (without a reload)
    screenshot(page, "03-files")

    # the same name again: asked on the page first; "keep" sends nothing, "replace" replaces it
    second.write_text("a newer version\n")
    page.locator("#file-picker").set_input_files([str(second)])
    page.locator("#uploads").get_by_role("button", name="Keep the one there").click()
    expect(uploads.nth(2)).to_have_text("notes.txt: not uploaded, the one there is kept")
    page.locator("#file-picker").set_input_files([str(second)])
    page.locator("#uploads").get_by_role("button", name="Replace it").click()
    expect(uploads.nth(3).locator(".upload-state")).to_have_text("uploaded")

    # rename, download and delete from the browser
    row = page.locator('tr[data-path="notes.txt"]')
    row.locator("summary", has_text="Rename").click()
    row.get_by_label("New name for notes.txt").fill("renamed.txt")
    row.get_by_role("button", name="Rename").click()
    expect(page.locator(".flash")).to_contain_text("Renamed 'notes.txt' to 'renamed.txt'.")
    with page.expect_download() as download:
        page.locator('tr[data-path="renamed.txt"]').get_by_role("link", name="Download").click()
    assert Path(download.value.path()).read_text() == "a newer version\n"
    row = page.locator('tr[data-path="renamed.txt"]')
    row.locator("summary", has_text="Delete").click()
    row.get_by_role("button", name="Delete file").click()
    expect(page.locator(".flash")).to_contain_text("Deleted 'renamed.txt'.")
    expect(page.locator('tr[data-path="renamed.txt"]')).to_have_count(0)


def test_an_interrupted_upload_resumes_where_it_stopped(
    page: Page, tmp_path: Path, live_server: LiveServer
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 * 2**20))  # two chunks of the page's tus client (8 MiB each)
    seen: list[str] = []

    def drop_the_second_chunk(route: Route) -> None:
        request = route.request
        seen.append(f"{request.method} {request.headers.get('upload-offset', '')}")
        if (
            request.method == "PATCH"
            and request.headers.get("upload-offset") != "0"
            and "dropped" not in seen
        ):
            seen.append("dropped")
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/v1/uploads/*", drop_the_second_chunk)
    page.goto("/files")
    page.locator("#file-picker").set_input_files(str(big))
    item = page.locator("#uploads li").first
    expect(item.locator(".upload-state")).to_have_text("uploaded", timeout=60_000)
    # the second chunk was sent again after asking the server where to resume (HEAD), not from the start
    assert seen == ["PATCH 0", "PATCH 8388608", "dropped", "HEAD ", "PATCH 8388608"], seen
    with live_server.api(live_server.admin_token()) as api:
        listing = api.get("/api/v1/files").json()["items"]
    stored = next(e for e in listing if e["path"] == "big.bin")
    assert stored["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()


def test_run_spike_detection_from_the_generated_form(page: Page, tmp_path: Path) -> None:
    page.goto("/apps")
    page.get_by_role("link", name="Spike detection").first.click()
    expect(page.get_by_role("heading", name="Spike detection")).to_be_visible()
    threshold = page.get_by_label("Threshold")
    expect(threshold).to_have_value("4.5")
    expect(threshold).to_have_attribute("min", "1")
    expect(page.get_by_label("Polarity")).to_have_value("neg")

    # a value the schema refuses comes back next to its field
    page.locator("details.browse summary").first.click()  # (the path could be typed too)
    page.locator(".browse-pane").get_by_role("button", name="trace.csv").click()
    expect(page.locator("#f-inputs-trace")).to_have_value("trace.csv")
    threshold.fill("0.5")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator('[data-error-for="params.threshold"]')).to_contain_text("must be at least 1")
    screenshot(page, "04-run-form-error")

    page.get_by_label("Threshold").fill("5")
    page.get_by_label("Name").fill("first spikes")
    page.get_by_role("button", name="Start job").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", name="first spikes")).to_be_visible()

    # the live log and the progress bar, then the results
    expect(page.locator("#log")).to_contain_text("detected", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-status")).to_have_attribute("data-state", "succeeded", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#log-state")).to_have_text("the job succeeded")
    expect(page.locator("#job-status progress.job-progress")).to_have_attribute("value", "1.0")
    # the log: numbered lines, progress lines hidden until asked for, paths within the job, a filter
    log = page.locator("#log")
    assert log.locator(".line.control").count() > 0
    expect(log.locator(".line.control").first).to_be_hidden()
    command = log.locator(".line").filter(has_text="--trace").first
    expect(command).to_contain_text("--trace inputs/")
    expect(command).to_contain_text("--out output")
    expect(log).not_to_contain_text("/attempt-")
    expect(log.locator("#L1 a.ln")).to_have_attribute("href", "#L1")
    page.get_by_label("Show progress lines").check()
    expect(log.locator(".line.control").first).to_be_visible()
    page.get_by_label("Show progress lines").uncheck()
    page.get_by_label("Find in the log").fill("DETECTED")
    expect(page.locator("#log-matches")).to_have_text("1 matching line")
    expect(log.locator(".line:visible")).to_have_count(1)
    expect(log.locator(".line:visible")).to_contain_text("detected")
    page.get_by_label("Find in the log").fill("")
    plot = page.get_by_role("img", name="spikes.png")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.complete && img.naturalWidth > 100")
    expect(page.locator("table.csv").first).to_be_visible()
    expect(page.locator("pre.text-preview").first).to_contain_text("spikes")
    screenshot(page, "05-job-succeeded")

    with page.expect_download() as download:
        page.get_by_role("link", name="spikes.csv", exact=True).click()
    assert download.value.suggested_filename == "spikes.csv"
    assert "time_s" in Path(download.value.path()).read_text().splitlines()[0]
    with page.expect_download() as zipped:
        page.get_by_role("link", name="Download all (zip)").click()
    assert zipped.value.suggested_filename.endswith("-outputs.zip")

    page.goto("/jobs")
    expect(page.locator("#job-table")).to_contain_text("first spikes")
    screenshot(page, "06-jobs")


def test_cancel_a_running_job(page: Page) -> None:
    page.goto("/apps/lif")
    page.get_by_label("Neurons").fill("2000")
    page.get_by_label("Duration", exact=False).fill("60000")
    page.get_by_label("Values").fill("4,5,6,7,8,9,10,11,12,13")
    page.get_by_label("Name").fill("long sweep")
    page.get_by_role("button", name="Start job").click()
    status = page.locator("#job-status")
    expect(status).to_have_attribute("data-state", "running", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#log")).not_to_be_empty()
    expect(status.locator("progress.job-progress")).to_be_visible()
    screenshot(page, "07-job-running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash")).to_contain_text("Cancel requested.")
    expect(page.locator("#job-status")).to_have_attribute("data-state", "cancelled", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#log-state")).to_have_text("the job cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Run again")).to_be_visible()


def test_create_an_api_token(page: Page, live_server: LiveServer) -> None:
    page.goto("/account")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-secret")
    expect(secret).to_have_value(re.compile(r"^lc_"))
    token = secret.input_value()
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    screenshot(page, "08-account-token")
    with live_server.api(token) as api:
        assert api.get("/api/v1/me").json()["email"] == ADMIN_EMAIL
    page.goto("/account")
    expect(page.locator("#token-secret")).to_have_count(0)
    expect(page.get_by_role("cell", name="laptop", exact=True)).to_be_visible()


def test_user_content_never_runs_as_script(page: Page, live_server: LiveServer) -> None:
    with live_server.api(live_server.admin_token()) as api:
        job = api.post("/api/v1/jobs", json={"app": "hello", "name": XSS}).json()
        r = api.put("/api/v1/files/<img src=x onerror=alert(2)>.txt", content=b"hi")
        assert r.status_code == 201, r.text
    page.goto(f"/jobs/{job['id']}")
    expect(page.get_by_role("heading", name=XSS)).to_be_visible()
    page.goto("/jobs")
    expect(page.locator("#job-table").get_by_role("link", name=XSS)).to_be_visible()
    page.goto("/files")
    expect(page.get_by_role("link", name="<img src=x onerror=alert(2)>.txt", exact=True)).to_be_visible()
    page.goto("/")
    expect(page.get_by_text(XSS).first).to_be_visible()
    screenshot(page, "09-dashboard")
    # the `page` fixture fails the test if any dialog opened


def test_admin_pages(page: Page) -> None:
    page.goto("/admin/users")
    page.get_by_label("Email").fill("ada@example.org")
    page.get_by_role("button", name="Invite").click()
    expect(page.locator("#invited-password")).not_to_have_value("")
    expect(page.locator('tr[data-user="ada@example.org"]')).to_be_visible()
    screenshot(page, "10-admin-users")
    page.locator('tr[data-user="ada@example.org"]').get_by_role("button", name="Deactivate").click()
    expect(page.locator('tr[data-user="ada@example.org"]')).to_contain_text("deactivated")
    page.get_by_role("link", name="App registry").click()
    expect(page.get_by_role("heading", name="Loaded apps")).to_be_visible()
    screenshot(page, "11-admin-apps")


def test_share_a_project(page: Page, browser: Browser, live_server: LiveServer) -> None:
    colleague, password = "grace@example.org", "grace-password-1"
    with live_server.api(live_server.admin_token()) as api:
        r = api.post("/api/v1/users", json={"email": colleague, "password": password, "name": "Grace"})
        assert r.status_code == 201, r.text
    page.goto("/")
    page.get_by_role("link", name="Projects").click()
    page.get_by_label("Name").fill("Vision Lab")
    page.get_by_label("Slug (optional)").fill("Vision!")
    page.get_by_role("button", name="Create project").click()
    expect(page.locator('[data-error-for="slug"]')).to_contain_text("lower-case letters")
    screenshot(page, "12-projects")
    page.get_by_label("Slug (optional)").fill("")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name="Vision Lab")).to_be_visible()
    page.get_by_label("Email").fill(colleague)
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator(f'tr[data-member="{colleague}"] [data-role]')).to_have_text("member")
    screenshot(page, "13-project")

    # the colleague, in a browser of her own, starts a job in the project
    own = browser.new_context(base_url=live_server.url)
    try:
        tab = own.new_page()
        tab.goto("/login")
        tab.get_by_label("Email").fill(colleague)
        tab.get_by_label("Password").fill(password)
        tab.get_by_role("button", name="Log in").click()
        # the admin issued her password: she chooses her own before anything else
        expect(tab.locator("#choose-password")).to_be_visible()
        tab.goto("/apps/hello")
        expect(tab).to_have_url(re.compile(r"/account#password$"))
        tab.get_by_label("Current password").fill(password)
        tab.get_by_label("New password").fill("grace-own-password-2")
        tab.get_by_role("button", name="Change password").click()
        expect(tab.locator(".flash")).to_contain_text("Your password is changed")
        expect(tab.locator("#choose-password")).to_have_count(0)
        tab.goto("/")
        expect(tab.get_by_role("heading", name="Dashboard")).to_be_visible()
        tab.goto("/apps/hello")
        tab.get_by_label("Project").select_option(label="Vision Lab")
        screenshot(tab, "14-run-in-a-project")
        tab.get_by_role("button", name="Start job").click()
        expect(tab.locator("#job-project")).to_have_text("Vision Lab")
        expect(tab.locator("#job-status")).to_have_attribute(
            "data-state", "succeeded", timeout=JOB_TIMEOUT_MS
        )
        job_url = tab.url
    finally:
        own.close()

    # the owner finds it among the project's jobs
    page.goto("/jobs")
    page.get_by_label("Project").select_option(label="Vision Lab")
    page.get_by_role("button", name="Filter").click()
    row = page.locator("#job-table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("[data-project]")).to_have_text("Vision Lab")
    screenshot(page, "15-project-jobs")
    row.get_by_role("link").first.click()
    expect(page).to_have_url(job_url)
    expect(page.get_by_text("run by Grace")).to_be_visible()


def test_a_note_appears_when_a_job_ends_while_a_page_is_open(page: Page, live_server: LiveServer) -> None:
    with live_server.api(live_server.admin_token()) as api:
        old = api.post("/api/v1/jobs", json={"app": "hello", "name": "ended before"}).json()
        url = f"/api/v1/jobs/{old['id']}"
        eventually(
            lambda: api.get(url).json()["state"] == "succeeded", JOB_TIMEOUT_MS / 1000, "the first job"
        )
        page.goto("/files")
        # the page starts from now: it notes where it stands, and shows nothing old
        page.wait_for_function("() => sessionStorage.getItem('labcloud.last-job-end')")
        job = api.post("/api/v1/jobs", json={"app": "hello", "name": "greeted"}).json()
    notes = page.locator("#job-notices")
    expect(notes).to_have_attribute("role", "status")
    expect(notes).to_have_attribute("aria-live", "polite")
    note = notes.locator(".toast")
    expect(note).to_have_count(1, timeout=JOB_TIMEOUT_MS)
    expect(note.get_by_role("link")).to_have_text("Job “greeted” succeeded.")
    expect(note.get_by_role("link")).to_have_attribute("href", f"/jobs/{job['id']}")
    screenshot(page, "16-job-end-note")
    note.get_by_role("button", name="Dismiss").click()
    expect(note).to_have_count(0)
    # a reload does not show it again
    with page.expect_response(lambda r: "/api/v1/me/events" in r.url):
        page.reload()
    expect(notes.locator(".toast")).to_have_count(0)
    page.goto("/account")
    expect(page.get_by_role("button", name="Enable desktop notifications")).to_be_visible()
