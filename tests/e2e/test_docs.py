"""/docs in a real browser: Swagger UI from vendored files works under its strict Content-Security-Policy
(nothing refused, nothing fetched from elsewhere), and its Authorize button logs in."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, LiveServer, screenshot

pytestmark = pytest.mark.e2e


def test_swagger_ui_runs_under_its_csp_and_logs_in(page: Page, live_server: LiveServer) -> None:
    refused: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    origin = urlsplit(live_server.url).netloc
    page.on(
        "request", lambda r: elsewhere.append(r.url) if urlsplit(r.url).netloc not in (origin, "") else None
    )

    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/v1/jobs").first).to_be_visible()

    page.get_by_role("button", name="Authorize").first.click()
    page.locator("#oauth_username").fill(ADMIN_EMAIL)
    page.locator("#oauth_password").fill(ADMIN_PASSWORD)
    modal = page.locator(".modal-ux")
    modal.locator(".auth-btn-wrapper button.authorize").click()
    expect(modal).to_contain_text("Authorized")  # Swagger UI logged in at /api/v1/auth/login
    modal.get_by_text("Close", exact=True).click()

    me = page.locator("#operations-me-read_me")
    me.locator(".opblock-summary").click()
    me.get_by_role("button", name="Try it out").click()
    me.get_by_role("button", name="Execute").click()
    expect(me.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    expect(me.locator(".live-responses-table").first).to_contain_text(ADMIN_EMAIL)
    screenshot(page, "docs")
    assert not refused, refused
    assert not elsewhere, elsewhere
