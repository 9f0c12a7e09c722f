"""An admin registers a remote worker in the browser, a real ``labcloud worker`` connects with the token
shown once, and the admin drains it: the page follows the worker's state by itself."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from live_server import LABCLOUD
from testing.daemons import clean_env

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, LiveServer, screenshot

pytestmark = pytest.mark.e2e
StartWorker = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def start_worker(live_server: LiveServer, tmp_path: Path) -> Iterator[StartWorker]:
    """Starts ``labcloud worker`` against the live server with a token; stops it after the test."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(token: str) -> subprocess.Popen[bytes]:
        work_dir = live_server.home / f"worker-{len(started)}"  # under the server's home: cleaned up with it
        log_path = tmp_path / f"worker-{len(started)}.log"
        command = [*LABCLOUD, "worker", "--server", live_server.url, "--sandbox", "off"]
        command += ["--cpus", "1", "--memory-mb", "512", "--work-dir", str(work_dir), "--kill-grace", "1"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                env={**clean_env(), "LABCLOUD_WORKER_TOKEN": token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append((proc, log_path))
        return proc

    yield start
    for proc, log_path in started:
        proc.terminate()  # no jobs: it stops at once
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError("the worker did not stop on SIGTERM:\n" + log_path.read_text()) from None


def log_in(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_an_admin_drains_a_worker(page: Page, live_server: LiveServer, start_worker: StartWorker) -> None:
    log_in(page)
    page.goto("/admin/users")
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Workers").click()
    expect(page).to_have_url(re.compile(r"/admin/workers$"))
    expect(page.get_by_text("No workers are registered")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("rig-1")
    page.get_by_label("Labels", exact=True).fill("platform=spinnaker\nroom=B12")
    page.get_by_role("button", name="Register worker").click()
    token_box = page.locator("#worker-token")
    expect(token_box).to_have_value(re.compile(r"^lcw_"))
    token = token_box.input_value()
    expect(page.locator("#worker-command")).to_have_value(
        f"LABCLOUD_WORKER_TOKEN={token} labcloud worker --server {live_server.url}"
    )
    page.get_by_role("button", name="Copy the token").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    row = page.locator('tr[data-worker="rig-1"]')
    expect(row).to_have_attribute("data-state", "waiting")  # registered, never heard from
    expect(row).to_contain_text("waiting for first connection")
    expect(row).to_contain_text("platform=spinnaker")

    worker = start_worker(token)
    # the table refreshes by itself: the first heartbeat makes the worker active
    expect(row).to_have_attribute("data-state", "active", timeout=30_000)
    badge = row.locator(".badge")
    expect(badge).to_have_text("active")
    expect(badge).to_have_class(re.compile(r"\bok\b"))
    expect(row.locator("time")).to_have_text(re.compile(r"now|second"))  # a relative age
    expect(row.get_by_role("cell").nth(4)).to_contain_text(re.compile(r"1 CPU\s+·\s+512.0 MiB"))
    expect(row).to_contain_text("disk free")
    expect(row).to_contain_text("none")  # no running jobs
    screenshot(page, "12-admin-workers")

    row.get_by_role("button", name="Drain").click()
    expect(page.locator(".flash")).to_contain_text("rig-1 is draining")
    expect(page.locator("#worker-token")).to_have_count(0)  # the token was shown once
    expect(badge).to_have_text("draining")
    expect(badge).to_have_class(re.compile(r"\bwait\b"))
    expect(row.get_by_role("button", name="Drain")).to_have_count(0)
    expect(row.locator("summary", has_text="Revoke")).to_be_visible()
    screenshot(page, "13-admin-workers-draining")
    with live_server.api(live_server.admin_token()) as api:
        listed = api.get("/api/v1/workers").json()["items"]
    assert [(w["name"], w["state"]) for w in listed] == [("rig-1", "draining")]
    assert worker.poll() is None, "a drained worker keeps running (it only takes no more jobs)"
