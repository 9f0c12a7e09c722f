"""End-to-end fixtures: one real ``labcloud serve`` and one headless Chromium per test module.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright for Python; ``playwright install`` is never
used. A missing browser is a failure, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from conftest import _empty_tables, backend, kill_processes_under
from live_server import serve, server_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "e2e-admin-password"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


@dataclass
class LiveServer:
    url: str
    home: Path
    apps_dir: Path

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin_token(self) -> str:
        with self.api() as c:
            r = c.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            r.raise_for_status()
            token: str = r.json()["access_token"]
            return token


@pytest.fixture(scope="module")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("e2e-home")
    apps_dir = home / "apps"
    apps_dir.mkdir()
    env = server_env(
        home,
        (ADMIN_EMAIL, ADMIN_PASSWORD),
        database_url if backend() == "postgresql" else None,
        scheduler_interval_s="0.5",
        apps_check_interval_s="0",
        local_cpus="2",
        local_memory_mb="4096",
        webhook_allow_private="true",  # webhooks to 127.0.0.1 (the accessibility test's show failed tries)
        device_sample_interval_s="1",  # a device's history fills in seconds (the accessibility test's charts)
    )
    try:
        with serve(env, home / "server.log") as url:
            yield LiveServer(url, home, apps_dir)
    finally:
        kill_processes_under(home)
        if backend() == "postgresql":
            _empty_tables(database_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        "Debian's chromium is missing: run scripts/ensure-system.sh "
        "(apt-get install chromium chromium-driver)"
    )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def context(browser: Browser, live_server: LiveServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    ctx.set_default_timeout(30_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab in the shared (logged-in, once logged in) browser. Any JavaScript dialog fails the test: no
    page has one, so a dialog means injected script ran."""
    tab = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    tab.close()
    assert not dialogs, f"a JavaScript dialog opened: {dialogs}"
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
