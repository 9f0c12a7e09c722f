"""The web UI's second round, proven in a real Chromium against a real ``labcloud serve``: edit and run again,
every problem of the run form at once, the input picker, run numbers, search, the jobs list's tags, order and
bulk actions, the files page's folders, bulk delete and full-size outputs, the log viewer, a session that ends
while a page is open, the small breakages fixed, and the admin's pages (every user's queue, a user's page,
passwords an admin issued, a new worker, the tables at phone width).

One server and one logged-in admin browser for the module; other users log in in browsers of their own.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

import labcloud_demo
from live_server import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, LiveServer, screenshot
from .test_accessibility import LONG_TOKEN, WIDER_THAN_THE_VIEWPORT, WORDS_BROKEN_IN_TABLES

pytestmark = pytest.mark.e2e
SAMPLES = Path(labcloud_demo.__file__).parent / "samples"
JOB_TIMEOUT_S = 90
UUID = r"[0-9a-f-]{36}"
USER_EMAIL = "marie-sklodowska.researcher@neuroscience-department.example.org"
USER_PASSWORD = "second-round-user-password"
USER_NAME = "Marie Skłodowska-Curie (Institute of Experimental Neuroscience)"
PHONE = {"width": 390, "height": 844}
ENDED = {"succeeded", "failed", "cancelled"}


@dataclass
class World:
    """What the module's server holds before the tests start."""

    spikes: str  # a spikes job that succeeded, named, tagged, with chosen parameters and memory
    calibration: str  # a hello job named "calibration sweep", tagged rig=b


def _wait_state(api: httpx.Client, job_id: str, states: set[str]) -> str:
    def reached() -> str | None:
        state: str = api.get(f"/api/v1/jobs/{job_id}").json()["state"]
        return state if state in states else None

    return eventually(reached, JOB_TIMEOUT_S, f"job {job_id} to reach {sorted(states)}", interval=0.2)


def _token(live_server: LiveServer, email: str, password: str) -> str:
    with live_server.api() as c:
        r = c.post("/api/v1/auth/login", data={"username": email, "password": password})
        r.raise_for_status()
        token: str = r.json()["access_token"]
        return token


def _submit(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def _put(api: httpx.Client, path: str, content: bytes) -> None:
    r = api.put(f"/api/v1/files/{path}", content=content)
    assert r.status_code == 201, r.text


def _log_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> World:
    # two apps of this module's own: one that waits, one that writes an output before it waits. Each
    # prints its line in pieces: the log shows the command line first, and a test waiting for the line
    # must not take the command's own text for it (a cancel then came before the output was written)
    waiting = {
        "description": "Print a line, then wait",
        "runtime": "process",
        "command": ["python", "-c", "import time; print('still', 'working', flush=True); time.sleep(600)"],
        "parameters": {"type": "object", "properties": {}},
        "resources": {"cpus": 1, "memory_mb": 128, "timeout_s": 900},
    }
    writing = {
        **waiting,
        "description": "Write one output, then wait",
        "command": [
            "python",
            "-c",
            "import pathlib, sys, time; pathlib.Path(sys.argv[1], 'partial.txt').write_text('half done');"
            " print('wrote', 'partial.txt', flush=True); time.sleep(600)",
            "{output}",
        ],
    }
    for name, entrypoint in (("sleeper", waiting), ("partial", writing)):
        app = {
            "name": name,
            "title": name.capitalize(),
            "versions": {"1.0": {"entrypoints": {"main": entrypoint}}},
        }
        (live_server.apps_dir / f"{name}.yaml").write_text(json.dumps(app))  # JSON is YAML
    trace = (SAMPLES / "trace.csv").read_bytes()
    with live_server.api(live_server.admin_token()) as api:
        r = api.post(
            "/api/v1/users",
            json={
                "email": USER_EMAIL,
                "password": USER_PASSWORD,
                "name": USER_NAME,
                "must_change_password": False,
            },
        )
        assert r.status_code == 201, r.text
        for path in ("trace.csv", "rec/day1/a.csv", "top.csv", "recordings/calibration-2024.csv"):
            _put(api, path, trace)
        _put(api, "rec/day1/b.npy", (SAMPLES / "trace.npy").read_bytes())
        _put(api, "rec/notes.txt", b"not a trace\n")
        r = api.post(
            "/api/v1/workers",
            json={"name": "rig-1", "labels": {"platform": "spinnaker", "room": "B12-electrophysiology"}},
        )
        assert r.status_code == 201, r.text
        spikes = _submit(
            api,
            app="spikes",
            params={"threshold": 7.5, "polarity": "both"},
            inputs={"trace": "trace.csv"},
            resources={"memory_mb": 300},
            name="first spikes",
            tags={"exp": "4"},
        )
        calibration = _submit(api, app="hello", name="calibration sweep", tags={"rig": "b"})
        for job in (spikes, calibration):
            assert _wait_state(api, job["id"], ENDED) == "succeeded"
    return World(spikes["id"], calibration["id"])


@pytest.fixture(scope="module", autouse=True)
def logged_in(context: BrowserContext, world: World) -> None:
    """The module's shared browser, logged in as the admin."""
    tab = context.new_page()
    _log_in(tab, ADMIN_EMAIL, ADMIN_PASSWORD)
    expect(tab.get_by_role("heading", name="Dashboard")).to_be_visible()
    tab.close()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.api(live_server.admin_token()) as client:
        yield client


@pytest.fixture
def own_browser(browser: Browser, live_server: LiveServer) -> Iterator[Any]:
    """Browsers of their own (another user, or one whose session is to end), closed after the test."""
    made: list[BrowserContext] = []

    def new(**options: Any) -> BrowserContext:
        ctx = browser.new_context(base_url=live_server.url, **options)
        ctx.set_default_timeout(30_000)
        made.append(ctx)
        return ctx

    yield new
    for ctx in made:
        ctx.close()


def _cancel_all(api: httpx.Client, job_ids: list[str]) -> None:
    """Leave the server's CPUs free for the next test."""
    for job_id in job_ids:
        api.post(f"/api/v1/jobs/{job_id}/cancel")
    for job_id in job_ids:
        _wait_state(api, job_id, ENDED)


# ----------------------------------------------------------------------------------------- run form


def test_edit_and_run_again_opens_the_form_filled_in(page: Page, world: World, api: httpx.Client) -> None:
    page.goto(f"/jobs/{world.spikes}")
    expect(page.locator("#job-status")).to_have_attribute("data-state", "succeeded")
    page.get_by_role("link", name="Edit and run again").click()
    expect(page).to_have_url(re.compile(rf"/apps/spikes\?(.*&)?from_job={world.spikes}(&|$)"))
    expect(page.locator("#from-job")).to_contain_text("Filled in from")
    expect(page.locator("#from-job").get_by_role("link")).to_have_attribute("href", f"/jobs/{world.spikes}")
    # the earlier job's answers: parameters, input, name, tags and resources
    expect(page.get_by_label("Threshold")).to_have_value("7.5")
    expect(page.get_by_label("Polarity")).to_have_value("both")
    expect(page.locator("#f-inputs-trace")).to_have_value("trace.csv")
    expect(page.locator("#f-name")).to_have_value("first spikes")
    expect(page.locator("#f-tags")).to_have_value("exp=4")
    page.locator("details.resources summary").click()
    expect(page.get_by_label("Memory (MB)")).to_have_value("300")
    assert float(page.get_by_label("CPUs").input_value()) == 1
    screenshot(page, "second-01-edit-and-run-again")

    page.get_by_label("Threshold").fill("9")
    page.get_by_role("button", name="Start job").click()
    expect(page).to_have_url(re.compile(rf"/jobs/{UUID}$"))
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != world.spikes
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^first spikes \(#\d+\)$"))
    params = page.locator("section.card", has=page.get_by_role("heading", name="Parameters"))
    expect(params.get_by_role("row", name="threshold")).to_contain_text("9")
    expect(params.get_by_role("row", name="polarity")).to_contain_text("both")
    expect(params.locator(".tag")).to_have_text(["exp=4"])
    new = api.get(f"/api/v1/jobs/{new_id}").json()
    assert new["params"]["threshold"] == 9 and new["params"]["polarity"] == "both"
    assert new["inputs"] == {"trace": "trace.csv"} and new["resources"]["memory_mb"] == 300
    _wait_state(api, new_id, ENDED)  # (its CPU free for the tests after)


def _colour(page: Page, selector: str) -> tuple[int, ...]:
    text: str = page.locator(selector).evaluate("el => getComputedStyle(el).borderTopColor")
    return tuple(int(float(n)) for n in re.findall(r"[\d.]+", text)[:3])


def test_every_problem_of_the_run_form_is_shown_at_once(page: Page, api: httpx.Client) -> None:
    jobs_before = len(api.get("/api/v1/jobs", params={"limit": 100}).json()["items"])
    page.goto("/apps/spikes")
    page.locator("details.resources summary").click()
    cpus_help = page.locator("#f-resources-cpus-help").inner_text()
    memory_help = page.locator("#f-resources-memory_mb-help").inner_text()
    assert re.search(r"up to 2\b", cpus_help), cpus_help  # the server's own limits
    assert re.search(r"up to 4096\b", memory_help), memory_help

    # several bad fields at once: a tag without "=", no input, a threshold under its minimum, too many
    # CPUs and more memory than this server has
    page.locator("#f-tags").fill("good=1, broken")
    page.get_by_label("Threshold").fill("0.5")
    page.get_by_label("CPUs").fill("64")
    page.get_by_label("Memory (MB)").fill("8192")
    page.get_by_role("button", name="Start job").click()

    summary = page.locator("#form-errors")
    expect(summary).to_be_visible()
    expect(summary).to_be_focused()  # the first thing read is what to fix
    assert page.evaluate("() => document.activeElement.id") == "form-errors"
    expect(summary).to_contain_text("The job was not started: 5 fields to fix.")
    links = summary.get_by_role("link")
    expect(links).to_have_text(["Trace", "Threshold (σ)", "Tags", "CPUs", "Memory (MB)"])  # noqa: RUF001
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [
        "#f-inputs-trace",
        "#f-params-threshold",
        "#f-tags",
        "#f-resources-cpus",
        "#f-resources-memory_mb",
    ]
    # each error next to its field, in words and in the unit the help uses
    expect(page.locator('[data-error-for="inputs.trace"]')).to_have_text(
        re.compile(r"^missing required input")
    )
    expect(page.locator('[data-error-for="params.threshold"]')).to_have_text("must be at least 1 σ")  # noqa: RUF001
    expect(page.locator('[data-error-for="tags"]')).to_have_text(
        "write each tag as key=value ('broken' is not)"
    )
    expect(page.locator('[data-error-for="resources.cpus"]')).to_have_text(
        "at most 2 CPUs here (asked for 64 CPUs)"
    )
    expect(page.locator('[data-error-for="resources.memory_mb"]')).to_have_text(
        "at most 4096 MB here (asked for 8192 MB)"
    )
    expect(page.locator("details.resources")).to_have_attribute("open", "")  # its errors are not hidden
    # what was typed stays
    expect(page.locator("#f-tags")).to_have_value("good=1, broken")
    expect(page.get_by_label("Memory (MB)")).to_have_value("8192")

    # invalid text fields have a red border, unlike the valid ones beside them
    valid = _colour(page, "#f-name")
    for selector in ("#f-tags", "#f-inputs-trace", "#f-params-threshold", "#f-resources-memory_mb"):
        colour = _colour(page, selector)
        assert colour != valid, (selector, colour, valid)
        red, green, blue = colour
        assert red > green + 80 and red > blue + 80, (selector, colour)
        width = page.locator(selector).evaluate("el => getComputedStyle(el).borderTopWidth")
        assert width == "2px", (selector, width)
    screenshot(page, "second-02-run-form-errors")

    # a link of the summary takes the keyboard to its field
    links.filter(has_text="Tags").click()
    expect(page).to_have_url(re.compile(r"#f-tags$"))
    expect(page.locator("#f-tags")).to_be_focused()
    expect(page.locator("#f-tags")).to_be_in_viewport()
    assert len(api.get("/api/v1/jobs", params={"limit": 100}).json()["items"]) == jobs_before  # none started


def test_the_input_picker_offers_what_the_slot_takes(page: Page, api: httpx.Client) -> None:
    page.goto("/apps/spikes")
    field = page.locator("#f-inputs-trace")
    # suggestions as one types: the input's list, of .csv and .npy files only
    assert field.evaluate("el => el.list && el.list.id") == "f-inputs-trace-list"
    offered = page.locator("#f-inputs-trace-list option").evaluate_all("os => os.map(o => o.value)")
    assert {"rec/day1/a.csv", "rec/day1/b.npy", "top.csv", "trace.csv"} <= set(offered), offered
    assert not [o for o in offered if not o.endswith((".csv", ".npy"))], offered
    expect(page.locator(".field", has=field).get_by_text("Takes a file (.csv or .npy)")).to_be_visible()

    # the browser: a folder at a time, only what the slot takes
    picker = page.locator(".picker", has=field)
    picker.locator("summary").click()
    pane = picker.locator(".browse-pane")
    expect(pane.get_by_role("link", name="📁 rec/")).to_be_visible()
    expect(pane.get_by_role("button", name="top.csv")).to_be_visible()
    pane.get_by_role("link", name="📁 rec/").click()
    expect(pane.locator(".picker-where")).to_contain_text("/rec")
    expect(pane.get_by_role("link", name="📁 day1/")).to_be_visible()
    expect(pane).not_to_contain_text("notes.txt")  # in this folder, but not a trace
    pane.get_by_role("link", name="📁 day1/").click()
    expect(pane.get_by_role("button", name="a.csv")).to_be_visible()
    pane.get_by_role("link", name="↑ up").click()
    expect(pane.get_by_role("link", name="📁 day1/")).to_be_visible()
    pane.get_by_role("link", name="📁 day1/").click()
    screenshot(page, "second-03-input-picker")
    pane.get_by_role("button", name="b.npy").click()
    expect(field).to_have_value("rec/day1/b.npy")
    expect(field).to_be_focused()
    expect(picker.locator("details.browse")).not_to_have_attribute("open", "")

    # a typed path the slot does not take is refused in words; one it takes starts the job
    field.fill("rec/notes.txt")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator('[data-error-for="inputs.trace"]')).to_have_text(
        "takes a file (.csv or .npy); 'rec/notes.txt' is not one"
    )
    page.locator("#f-inputs-trace").fill("top.csv")
    page.get_by_role("button", name="Start job").click()
    expect(page).to_have_url(re.compile(rf"/jobs/{UUID}$"))
    inputs = page.locator("section.card", has=page.get_by_role("heading", name="Inputs"))
    expect(inputs.get_by_role("row", name="trace")).to_contain_text("top.csv")
    _wait_state(api, page.url.rsplit("/", 1)[1], ENDED)


def test_unnamed_jobs_are_told_apart_by_their_run_number(page: Page, api: httpx.Client) -> None:
    titles = []
    for _ in range(2):
        page.goto("/apps/hello")
        page.get_by_role("button", name="Start job").click()
        expect(page).to_have_url(re.compile(rf"/jobs/{UUID}$"))
        job = api.get(f"/api/v1/jobs/{page.url.rsplit('/', 1)[1]}").json()
        title = f"hello #{job['run_number']}"
        expect(page.get_by_role("heading", level=1)).to_have_text(title)
        expect(page).to_have_title(f"{title} · labcloud")
        titles.append((job["id"], title, job["run_number"]))
    assert titles[1][2] == titles[0][2] + 1
    page.goto("/jobs")
    for job_id, title, _ in titles:
        expect(
            page.locator(f'tr[data-job="{job_id}"]').get_by_role("link", name=title, exact=True)
        ).to_be_visible()
    for job_id, _, _ in titles:
        _wait_state(api, job_id, ENDED)


# ------------------------------------------------------------------------------------- finding things


def test_search_finds_apps_jobs_and_files(page: Page, world: World) -> None:
    page.goto("/jobs")
    box = page.get_by_role("search", name="Search").get_by_label("Search apps, jobs and files")
    box.fill("spike")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=spike$"))
    expect(page.locator("#search-q")).to_have_value("spike")
    apps = page.locator("section", has=page.get_by_role("heading", name="Apps"))
    expect(apps.get_by_role("link", name="Spike detection")).to_be_visible()
    expect(apps.get_by_role("link", name="Hello")).to_have_count(0)

    page.get_by_label("Apps, jobs and files named").fill("CALIBRATION")
    page.get_by_role("button", name="Search", exact=True).click()
    jobs = page.locator("section", has=page.get_by_role("heading", name="Your jobs"))
    expect(jobs.get_by_role("link", name=re.compile(r"^calibration sweep \(#\d+\)$"))).to_be_visible()
    files = page.locator("section", has=page.get_by_role("heading", name="Files"))
    expect(files.get_by_role("link", name="recordings/calibration-2024.csv")).to_be_visible()
    screenshot(page, "second-04-search")

    page.goto("/search?q=rig%3Db")  # a tag
    expect(page.locator(f'[data-found-job="{world.calibration}"]')).to_be_visible()
    page.locator(f'[data-found-job="{world.calibration}"]').get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/jobs/{world.calibration}$"))

    page.goto("/search?q=calibration-2024")
    page.get_by_role("link", name="recordings/calibration-2024.csv").click()
    expect(page).to_have_url(re.compile(r"/files\?path=recordings$"))
    expect(page.locator('tr[data-path="recordings/calibration-2024.csv"]')).to_be_visible()

    page.goto("/search?q=no-such-name-anywhere")
    expect(page.locator("#nothing")).to_have_text("Nothing is named like “no-such-name-anywhere”.")


def test_jobs_list_filters_by_tag_orders_and_acts_on_ticked_jobs(page: Page, api: httpx.Client) -> None:
    tagged = _submit(api, app="hello", name="tagged seven", tags={"exp": "7", "rig": "c"})
    other = _submit(api, app="hello", name="tagged eight", tags={"exp": "8"})
    for job in (tagged, other):
        _wait_state(api, job["id"], ENDED)

    page.goto("/jobs")
    row = page.locator(f'tr[data-job="{tagged["id"]}"]')
    expect(row.locator(".tag")).to_have_text(["exp=7", "rig=c"])  # the tags are on the list
    row.get_by_role("link", name="exp=7").click()  # and each is a link to its filter
    expect(page).to_have_url(re.compile(r"/jobs\?tag=exp%3D7$"))
    expect(page.locator("#filter-tag")).to_have_value("exp=7")
    rows = page.locator("#job-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-job", tagged["id"])
    page.locator("#filter-tag").fill("exp=8")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-job", other["id"])
    screenshot(page, "second-05-jobs-by-tag")

    # newest first by default; oldest first when asked
    oldest = api.get("/api/v1/jobs", params={"order": "oldest", "limit": 1}).json()["items"][0]["id"]
    page.goto("/jobs")
    expect(rows.first).to_have_attribute("data-job", other["id"])
    page.get_by_label("Order").select_option(label="oldest first")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"order=oldest"))
    expect(rows.first).to_have_attribute("data-job", oldest)
    expect(rows.last).not_to_have_attribute("data-job", oldest)

    # tick two running jobs and cancel them together, then delete them together
    running = [_submit(api, app="sleeper", name=f"bulk {n}")["id"] for n in (1, 2)]
    try:
        page.goto("/jobs")
        for job_id in running:
            page.locator(f'tr[data-job="{job_id}"] input[type=checkbox]').check()
        page.get_by_role("button", name="Cancel them").click()
        expect(page.locator(".flash")).to_have_text("Cancelled 2 jobs.")
        for job_id in running:
            expect(page.locator(f'tr[data-job="{job_id}"] .badge')).to_have_attribute(
                "data-state", "cancelled", timeout=JOB_TIMEOUT_S * 1000
            )
        for job_id in running:
            page.locator(f'tr[data-job="{job_id}"] input[type=checkbox]').check()
        page.get_by_role("button", name="Delete them (ended ones)").click()
        expect(page.locator(".flash")).to_have_text("Deleted 2 jobs.")
        for job_id in running:
            expect(page.locator(f'tr[data-job="{job_id}"]')).to_have_count(0)
            assert api.get(f"/api/v1/jobs/{job_id}").status_code == 404
    finally:
        _cancel_all(api, [j for j in running if api.get(f"/api/v1/jobs/{j}").status_code == 200])


# ------------------------------------------------------------------------------------------------ files


def test_files_new_folder_bulk_delete_and_outputs_opened_full_size(
    page: Page, context: BrowserContext, world: World, api: httpx.Client
) -> None:
    page.goto("/files")
    page.get_by_label("Name of a new folder").fill("analysis-2025")
    page.get_by_role("button", name="New folder").click()
    expect(page.locator(".flash")).to_have_text("Made the folder 'analysis-2025'.")
    # it opens in the new folder, empty; the folder is in the one above
    expect(page).to_have_url(re.compile(r"/files\?path=analysis-2025$"))
    expect(page.get_by_text("This folder is empty.")).to_be_visible()
    page.get_by_role("navigation", name="Folder").get_by_role("link", name="Your files").click()
    expect(
        page.locator('tr[data-path="analysis-2025"]').get_by_role("link", name="📁 analysis-2025")
    ).to_be_visible()

    for name in ("one.txt", "two.txt", "three.txt"):
        _put(api, f"bulk/{name}", name.encode())
    page.goto("/files?path=bulk")
    page.get_by_role("checkbox", name="Choose one.txt").check()
    page.get_by_role("checkbox", name="Choose two.txt").check()
    page.get_by_role("button", name="Delete them").click()
    expect(page.locator(".flash")).to_have_text("Deleted 2 of 2.")
    expect(page).to_have_url(re.compile(r"/files\?path=bulk$"))
    expect(page.locator("#file-table tbody tr")).to_have_count(1)
    expect(page.locator('tr[data-path="bulk/three.txt"]')).to_be_visible()
    names = {e["path"] for e in api.get("/api/v1/files", params={"prefix": "bulk/"}).json()["items"]}
    assert names == {"bulk/three.txt"}, names

    # an output opens full size in the browser: shown, not downloaded
    downloads: list[str] = []

    def downloaded(download: Any) -> None:
        downloads.append(download.suggested_filename)

    context.on("download", downloaded)
    page.goto(f"/jobs/{world.spikes}")
    with page.expect_popup() as opened:
        page.get_by_role("link", name="open spikes.png full size").click()
    image = opened.value
    image.wait_for_load_state()
    assert image.url.endswith("/outputs/spikes.png?view=1"), image.url
    assert image.evaluate("() => document.contentType") == "image/png"
    assert image.locator("img").evaluate("img => img.complete && img.naturalWidth > 100")
    screenshot(image, "second-06-output-full-size")
    image.close()
    with page.expect_popup() as opened:
        page.get_by_role("link", name="open summary.json full size").click()
    text = opened.value
    text.wait_for_load_state()
    assert text.evaluate("() => document.contentType") == "text/plain"
    expect(text.locator("body")).to_contain_text('"threshold"')
    text.close()
    context.remove_listener("download", downloaded)
    assert downloads == [], downloads


# -------------------------------------------------------------------------------------------------- log


def test_the_log_viewer(page: Page, world: World, live_server: LiveServer) -> None:
    page.goto(f"/jobs/{world.spikes}")
    log = page.locator("#log")
    expect(page.locator("#log-state")).to_have_text("the job succeeded")
    expect(log).to_contain_text("detected")
    # ::progress lines are hidden; the progress bar stands for them
    controls = log.locator(".line.control")
    assert controls.count() > 0
    for i in range(controls.count()):
        expect(controls.nth(i)).to_be_hidden()
    expect(log.locator(".line:visible").filter(has_text="::progress")).to_have_count(0)
    bar = page.locator("#job-status progress.job-progress")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("value", "1.0")
    # paths inside the job are told relative to it: no server folder shows
    command = log.locator(".line").filter(has_text="--trace").first
    expect(command).to_contain_text("--trace inputs/")
    expect(command).to_contain_text("--out output")
    expect(log).not_to_contain_text(str(live_server.home))
    expect(log).not_to_contain_text("/attempt-")
    # the filter narrows the lines shown
    total = log.locator(".line:visible").count()
    page.get_by_label("Find in the log").fill("DETECTED")
    expect(page.locator("#log-matches")).to_have_text("1 matching line")
    expect(log.locator(".line:visible")).to_have_count(1)
    expect(log.locator(".line:visible")).to_contain_text("detected")
    page.get_by_label("Find in the log").fill("")
    expect(log.locator(".line:visible")).to_have_count(total)
    # line numbers are links to their line
    line = log.locator(".line:visible").nth(1)
    number = line.get_attribute("id")
    assert number and re.fullmatch(r"L\d+", number), number
    expect(line.locator("a.ln")).to_have_attribute("href", f"#{number}")
    expect(line.locator("a.ln")).to_have_text(number[1:])
    line.locator("a.ln").click()
    expect(page).to_have_url(re.compile(rf"#{number}$"))
    assert line.evaluate("el => el.matches(':target')")
    screenshot(page, "second-07-log")
    # each line says when it came, shown on request
    stamp = line.locator("time.ts")
    expect(stamp).to_be_hidden()
    page.get_by_label("Show times").check()
    expect(stamp).to_be_visible()
    expect(stamp).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", stamp.get_attribute("datetime") or "")
    # a link to a line opens the page there (on a screen too short to show the log without scrolling),
    # the line marked
    page.set_viewport_size({"width": 1280, "height": 320})
    page.goto("/")
    page.goto(f"/jobs/{world.spikes}#{number}")
    expect(page.locator(f"#{number}")).to_be_in_viewport()
    expect(page.locator(f"#{number}")).to_have_class(re.compile(r"\blinked\b"))
    assert page.evaluate("() => window.scrollY") > 0


# ---------------------------------------------------------------------------------------------- session


def test_an_ended_session_logs_in_again_onto_the_whole_page(own_browser: Any, api: httpx.Client) -> None:
    job = _submit(api, app="sleeper", name="watched while logged out")
    try:
        _wait_state(api, job["id"], {"running"})
        ctx: BrowserContext = own_browser()
        page = ctx.new_page()
        _log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        page.goto(f"/jobs/{job['id']}")
        expect(page.locator("#job-status")).to_have_attribute("data-state", "running")
        assert any(c["name"] == "labcloud_session" for c in ctx.cookies())
        ctx.clear_cookies()  # the session is gone; the page's status poll goes on
        expect(page).to_have_url(re.compile(rf"/login\?next=%2Fjobs%2F{job['id']}$"), timeout=15_000)
        page.get_by_label("Email").fill(ADMIN_EMAIL)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(rf"/jobs/{job['id']}$"))
        # the whole page, styled: not the status fragment the poll asked for
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "watched while logged out (#" + str(job["run_number"]) + ")"
        )
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        expect(page).to_have_title(re.compile(r" · labcloud$"))
        assert page.evaluate("() => document.doctype !== null && document.styleSheets.length > 0")
        assert page.locator("header.top").evaluate("el => getComputedStyle(el).display") == "flex"
        expect(page.locator("#job-status")).to_have_count(1)
        expect(page.locator("#log")).to_contain_text("still working")
        screenshot(page, "second-08-logged-in-again")

        # the same with a button pressed (a form, not a poll): back on the page, not on an error
        ctx.clear_cookies()
        page.get_by_role("button", name="Cancel").click()
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("Email").fill(ADMIN_EMAIL)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(rf"/jobs/{job['id']}$"))
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.locator("#job-status")).to_have_count(1)
        expect(page.locator("#job-status")).to_have_attribute("data-state", "running")  # (not done unasked)
    finally:
        _cancel_all(api, [job["id"]])


# ------------------------------------------------------------------------------------ small breakages


def test_uploads_update_the_storage_line_and_ask_before_replacing(page: Page, tmp_path: Path) -> None:
    page.goto("/files")
    storage = page.locator("#storage-line")
    before = storage.inner_text()
    page.evaluate("() => { window.notReloaded = true; }")
    first = tmp_path / "measurements.txt"
    first.write_text("1 2 3\n" * 5000)
    page.locator("#file-picker").set_input_files(str(first))
    uploads = page.locator("#uploads li")
    expect(uploads.first.locator(".upload-state")).to_have_text("uploaded")
    expect(page.locator('tr[data-path="measurements.txt"]')).to_be_visible()
    expect(storage).not_to_have_text(before)  # the storage line follows, without a reload
    assert page.evaluate("() => window.notReloaded === true")

    # the same name again: asked on the page before anything is sent
    first.write_text("a newer version\n")
    page.locator("#file-picker").set_input_files(str(first))
    ask = page.locator("#uploads li.ask")
    expect(ask).to_contain_text("“measurements.txt” is already there.")
    expect(ask.get_by_role("button", name="Replace it")).to_be_focused()
    screenshot(page, "second-09-replace-or-keep")
    ask.get_by_role("button", name="Keep the one there").click()
    expect(uploads.nth(1)).to_have_text("measurements.txt: not uploaded, the one there is kept")
    page.locator("#file-picker").set_input_files(str(first))
    page.locator("#uploads li.ask").get_by_role("button", name="Replace it").click()
    expect(uploads.nth(2).locator(".upload-state")).to_have_text("uploaded")
    with page.expect_download() as download:
        page.locator('tr[data-path="measurements.txt"]').get_by_role("link", name="Download").click()
    assert Path(download.value.path()).read_text() == "a newer version\n"


def test_choose_files_shows_keyboard_focus_and_the_favicon_is_there(page: Page) -> None:
    page.goto("/files")
    picker = page.locator('label[for="file-picker"]')
    assert picker.evaluate("el => getComputedStyle(el).outlineStyle") == "none"
    page.locator("#new-folder").focus()  # (the field after it) and back by keyboard
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#file-picker")).to_be_focused()
    style, width = picker.evaluate(
        "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
    )
    assert style == "solid" and float(width.removesuffix("px")) >= 2, (style, width)

    response = page.goto("/favicon.ico")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("image/")


def test_a_cancelled_job_says_once_what_it_kept(page: Page, api: httpx.Client) -> None:
    wrote = _submit(api, app="partial", name="writes then waits")
    idle = _submit(api, app="sleeper", name="only waits")
    try:
        for job in (wrote, idle):
            page.goto(f"/jobs/{job['id']}")
            expect(page.locator("#job-status")).to_have_attribute(
                "data-state", "running", timeout=JOB_TIMEOUT_S * 1000
            )
            expect(page.locator("#log")).to_contain_text(
                "wrote partial.txt" if job is wrote else "still working", timeout=JOB_TIMEOUT_S * 1000
            )
            page.get_by_role("button", name="Cancel").click()
            expect(page.locator(".flash")).to_have_text("Cancel requested.")
            expect(page.locator("#job-status")).to_have_attribute(
                "data-state", "cancelled", timeout=JOB_TIMEOUT_S * 1000
            )
            outputs = page.locator("section.outputs")
            status = page.locator("#job-status")
            if job is wrote:
                expect(status.locator(".message")).to_have_text(
                    "cancelled; its one partial output file is kept"
                )
                expect(outputs.get_by_role("link", name="partial.txt", exact=True)).to_be_visible()
                expect(status).not_to_contain_text("No outputs were kept")
                screenshot(page, "second-10-cancelled-with-output")
            else:
                expect(outputs).to_contain_text("No outputs were kept.")
                expect(status).not_to_contain_text("partial output")
                expect(status).not_to_contain_text("kept;")
    finally:
        _cancel_all(api, [wrote["id"], idle["id"]])


# ------------------------------------------------------------------------------------------------ admin


def test_admin_sees_every_users_queue_and_cancels_a_job_there(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    with live_server.api(_token(live_server, USER_EMAIL, USER_PASSWORD)) as theirs:
        running = _submit(theirs, app="sleeper", name="her long sweep")
        _wait_state(theirs, running["id"], {"running"})
        waiting = _submit(theirs, app="sleeper", name="her big sweep", resources={"cpus": 2})
    try:
        page.goto("/admin/jobs")
        table = page.locator("#admin-job-table")
        run_row = table.locator(f'tr[data-job="{running["id"]}"]')
        wait_row = table.locator(f'tr[data-job="{waiting["id"]}"]')
        expect(run_row).to_contain_text(USER_EMAIL)
        expect(run_row).to_contain_text(f"{USER_EMAIL}'s own")  # her personal project, said as hers
        expect(run_row.locator(".badge")).to_have_text("running")
        expect(wait_row.locator(".badge")).to_have_text("queued")
        # why it waits, in words
        why = re.compile(r"^waiting for capacity: needs 2 CPUs and")
        expect(wait_row.locator("td").nth(4)).to_have_text(why)
        screenshot(page, "second-11-admin-queue")

        # where an attempt runs, on the job's page
        page.goto(f"/jobs/{running['id']}")
        expect(page.locator('ul.attempts li[data-attempt="1"]')).to_have_text(
            f"Attempt 1 runs on this server ({socket.gethostname()})"
        )
        expect(page.get_by_text(f"run by {USER_NAME}")).to_be_visible()

        page.goto("/admin/jobs")
        run_row.locator("summary", has_text="Cancel…").click()
        run_row.get_by_role("button", name=f"Cancel {USER_EMAIL}'s job").click()
        expect(page.locator(".flash")).to_have_text(
            re.compile(rf"^Job sleeper #{running['run_number']} of its owner is cancel(ling|led)\.$")
        )
        assert _wait_state(api, running["id"], ENDED) == "cancelled"
        page.goto("/admin/jobs?view=ended")
        expect(page.locator(f'tr[data-job="{running["id"]}"] .badge')).to_have_text("cancelled")
    finally:
        _cancel_all(api, [running["id"], waiting["id"]])
    # where each attempt ran, once ended
    page.goto(f"/jobs/{running['id']}")
    expect(page.locator('ul.attempts li[data-attempt="1"]')).to_contain_text(
        f"Attempt 1 ran on this server ({socket.gethostname()}) · cancelled after"
    )


def test_admin_sets_a_users_name_storage_and_password(
    page: Page, api: httpx.Client, own_browser: Any
) -> None:
    email, password = "ada@example.org", "ada-first-password"
    r = api.post("/api/v1/users", json={"email": email, "password": password, "must_change_password": False})
    assert r.status_code == 201, r.text
    page.goto("/admin/users")
    page.locator(f'tr[data-user="{email}"]').get_by_role("link", name=email).click()
    expect(page).to_have_url(re.compile(rf"/admin/users/{UUID}$"))
    page.get_by_label("Display name").fill("Ada Lovelace")
    page.get_by_label("Storage limit (MB)").fill("250")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text(f"{email}: name and storage limit saved.")
    expect(page.locator("#user-title")).to_have_text("Ada Lovelace")
    page.reload()
    expect(page.get_by_label("Display name")).to_have_value("Ada Lovelace")
    expect(page.get_by_label("Storage limit (MB)")).to_have_value("250.0")

    page.get_by_role("button", name=f"Reset the password of {email}").click()
    issued = page.locator("#issued-password")
    expect(issued).not_to_have_value("")
    new_password = issued.input_value()
    assert new_password != password
    expect(page.get_by_text("chooses a new password at the next login")).to_be_visible()
    screenshot(page, "second-12-admin-user")

    # she logs in with it, is asked for her own first, and sees her limit
    ctx: BrowserContext = own_browser()
    tab = ctx.new_page()
    _log_in(tab, email, password)  # the old one no longer works
    expect(tab.locator("#login-error")).to_be_visible()
    _log_in(tab, email, new_password)
    expect(tab.locator("#choose-password")).to_be_visible()
    tab.get_by_label("Current password").fill(new_password)
    tab.get_by_label("New password").fill("ada-own-password-2")
    tab.get_by_role("button", name="Change password").click()
    expect(tab.locator(".flash")).to_contain_text("Your password is changed")
    tab.goto("/files")
    expect(tab.locator("#storage-line")).to_contain_text("of 250")
    expect(tab.get_by_role("link", name="Ada Lovelace")).to_be_visible()  # (the header's account link)


def test_an_invited_user_chooses_their_own_password_first(page: Page, own_browser: Any) -> None:
    email = "newcomer@example.org"
    page.goto("/admin/users")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Invite", exact=True).click()
    issued = page.locator("#invited-password")
    expect(issued).not_to_have_value("")
    password = issued.input_value()

    ctx: BrowserContext = own_browser()
    tab = ctx.new_page()
    _log_in(tab, email, password)
    expect(tab).to_have_url(re.compile(r"/account#password$"))
    expect(tab.locator("#choose-password")).to_be_visible()
    for elsewhere in ("/jobs", "/apps/hello", "/files"):
        tab.goto(elsewhere)
        expect(tab).to_have_url(re.compile(r"/account#password$"))
    tab.get_by_label("Current password").fill(password)
    tab.get_by_label("New password").fill("newcomer-own-password")
    tab.get_by_role("button", name="Change password").click()
    expect(tab.locator(".flash")).to_contain_text("Your password is changed")
    expect(tab.locator("#choose-password")).to_have_count(0)
    tab.goto("/jobs")
    expect(tab.get_by_role("heading", name="Jobs")).to_be_visible()


def test_a_new_worker_waits_for_its_first_connection(page: Page) -> None:
    page.goto("/admin/workers")
    page.get_by_label("Name", exact=True).fill("rig-new")
    page.get_by_role("button", name="Register worker").click()
    expect(page.locator("#worker-token")).to_have_value(re.compile(r"^lcw_"))
    row = page.locator('tr[data-worker="rig-new"]')
    expect(row.locator(".badge")).to_have_text("waiting for first connection")
    expect(row).not_to_contain_text("lost")
    expect(row.get_by_text("never")).to_be_visible()  # no heartbeat yet
    # still so after the table refreshes itself
    with page.expect_response(lambda r: "/admin/workers/rows" in r.url):
        pass
    expect(row.locator(".badge")).to_have_text("waiting for first connection")


@pytest.mark.parametrize("path", ["/admin/users", "/admin/workers"])
def test_admin_tables_fit_a_phone(own_browser: Any, path: str) -> None:
    ctx: BrowserContext = own_browser(viewport=PHONE, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    _log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.goto(path)
    page.wait_for_load_state("networkidle")
    table = page.locator("table.users, table.workers")
    expect(table).to_be_visible()
    expect(table).to_contain_text(USER_EMAIL if path == "/admin/users" else "B12-electrophysiology")
    screenshot(page, f"second-13-phone{path.replace('/', '-')}")
    broken = page.evaluate(WORDS_BROKEN_IN_TABLES, LONG_TOKEN)
    assert not broken, f"words broken mid-word: {broken}"
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, page.evaluate(WIDER_THAN_THE_VIEWPORT, PHONE["width"])


# -------------------------------------------------------------------------------------------- provenance


def test_a_job_page_links_the_input_it_read_after_the_file_changed(page: Page, api: httpx.Client) -> None:
    trace = (SAMPLES / "trace.csv").read_bytes()
    _put(api, "provenance/trace.csv", trace)
    job = _submit(api, app="spikes", inputs={"trace": "provenance/trace.csv"}, name="provenance")
    assert _wait_state(api, job["id"], {"succeeded", "failed"}) == "succeeded"
    page.goto(f"/jobs/{job['id']}")
    link = page.get_by_role("link", name="provenance/trace.csv")
    expect(link).to_have_attribute("href", f"/jobs/{job['id']}/inputs/trace/trace.csv")
    expect(page.get_by_text("changed since")).to_have_count(0)
    expect(page.locator("#rerun-current-inputs")).to_have_count(0)

    _put(api, "provenance/trace.csv", b"time,value\n0,1\n")  # the same name, other content
    page.reload()
    expect(page.get_by_text("changed since")).to_be_visible()
    with page.expect_download() as got:
        page.get_by_role("link", name="provenance/trace.csv").click()
    assert Path(got.value.path()).read_bytes() == trace  # what the job read, not what is there now
    expect(page.locator("#rerun-current-inputs")).to_be_visible()
    page.locator("#rerun-job").click()  # the same content again
    expect(page.locator(".flash")).to_contain_text("Started again")
    rerun = page.url.rsplit("/", 1)[1]
    assert _wait_state(api, rerun, {"succeeded", "failed"}) == "succeeded"
    [pinned] = api.get(f"/api/v1/jobs/{rerun}/inputs").json()
    assert pinned["now"] == "changed" and pinned["size"] == len(trace)
