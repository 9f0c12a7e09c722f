"""Single sign-on against a real, certified OpenID provider (npm's oidc-provider, started here): in the
browser (log in with the provider's button, the claims making an administrator, log out at the provider too)
and on the command line (``labcloud login --sso`` with the device login, a code entered in a browser)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from conftest import _empty_tables, backend, kill_processes_under
from live_server import LABCLOUD, serve, server_env
from testing.daemons import clean_env, free_ports
from testing.oidc import oidc_provider

ADMIN = ("root@example.org", "sso-e2e-admin-password")
CLIENT_ID, CLIENT_SECRET = "labcloud", "e2e-client-secret"
ACCOUNTS = {
    "ada": {"email": "ada@lab.example", "email_verified": True, "name": "Ada", "groups": ["lab-admins"]},
    "carol": {"email": "carol@lab.example", "email_verified": True, "name": "Carol", "groups": []},
    # Claims the first administrator's address without the provider having verified it.
    "dan": {"email": ADMIN[0], "email_verified": False, "name": "Dan", "groups": []},
}


@dataclass
class SsoSite:
    url: str
    issuer: str
    campus: str  # the issuer of the provider without device login
    home: Path


@pytest.fixture(scope="module")
def site(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoSite]:
    home = tmp_path_factory.mktemp("sso-home")
    op_port, campus_port = free_ports(2)
    provider = {
        "name": "lab",
        "label": "Log in with Lab ID",
        "discovery_url": f"http://127.0.0.1:{op_port}",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scopes": ["openid", "email", "profile", "groups"],
        "allowed_domains": ["lab.example"],
        "roles_claim": "groups",
        "admin_values": ["lab-admins"],
    }
    env = server_env(
        home,
        ADMIN,
        database_url if backend() == "postgresql" else None,
        # "campus": another provider, without the device login (the command line then uses a browser here)
        sso_providers=json.dumps(
            [provider, {**provider, "name": "campus", "discovery_url": f"http://127.0.0.1:{campus_port}"}]
        ),
    )
    try:
        with serve(env, home / "server.log") as url:
            client = {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [f"{url}/login/sso/lab/callback", f"{url}/login/sso/campus/callback"],
                "post_logout_redirect_uris": [f"{url}/login"],
                "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
                "response_types": ["code"],
            }
            campus_client = {**client, "grant_types": ["authorization_code"]}
            with (
                oidc_provider(home, op_port, [client], ACCOUNTS) as issuer,
                oidc_provider(home, campus_port, [campus_client], ACCOUNTS, device_flow=False) as campus,
            ):
                yield SsoSite(url, issuer, campus, home)
    finally:
        kill_processes_under(home)
        if backend() == "postgresql":
            _empty_tables(database_url)


def _provider_login(page: Page, login: str) -> None:
    """The provider's own pages: its login form (any password), then its consent, when it asks."""
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if page.locator("input[name=prompt][value=consent]").count():
        page.click("button[type=submit]")


def test_browser_login_and_logout_through_the_provider(browser: Browser, site: SsoSite) -> None:
    ctx = browser.new_context(base_url=site.url)
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    try:
        page.goto("/login")
        page.click("#sso-lab")
        assert page.url.startswith(site.issuer), page.url
        _provider_login(page, "ada")
        page.wait_for_url(f"{site.url}/**")
        page.goto("/account")
        assert "ada@lab.example" in page.content()
        # The provider's groups claim made Ada an administrator: the admin pages open.
        assert page.goto("/admin/users").status == 200
        # Logging out here sends the browser on to log out at the provider too.
        page.click("form[action='/logout'] button")
        page.wait_for_url(f"{site.issuer}/**")
        page.click("button[type=submit]")  # the provider asks whether to log out of it
        page.wait_for_url(f"{site.url}/login**")
        assert page.goto("/account").url.startswith(f"{site.url}/login")
        # Logged out at the provider too: a new login asks for the login again.
        page.goto("/login")
        page.click("#sso-lab")
        page.wait_for_selector("input[name=login]")
    finally:
        ctx.close()


def test_refused_at_the_callback(browser: Browser, site: SsoSite) -> None:
    """Against the real provider: an answer played again (with or without the login's cookie), a forged
    state, and an unverified e-mail reaching for an existing account log nobody in."""
    ctx = browser.new_context(base_url=site.url)
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/login/sso/lab/callback" in r.url else None)
    try:
        page.goto("/login/sso/lab")
        pending = next(c for c in ctx.cookies() if c["name"] == "labcloud_sso")
        _provider_login(page, "carol")
        page.wait_for_url(f"{site.url}/**")
        (callback,) = callbacks
        # The same answer again: its login's cookie is gone, and with the cookie put back the provider
        # refuses the used code.
        assert page.goto(callback).status == 401
        assert "did not start here" in page.content()
        ctx.add_cookies([pending])
        assert page.goto(callback).status == 401
        assert "did not accept this login" in page.content()
        ctx.add_cookies([pending])
        forged = re.sub(r"state=[^&]+", "state=forged", callback)
        assert page.goto(forged).status == 401 and "does not belong to this login" in page.content()
    finally:
        ctx.close()
    ctx = browser.new_context(base_url=site.url)
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    try:
        page.goto("/login/sso/lab")
        _provider_login(page, "dan")
        page.wait_for_url(f"{site.url}/**")
        assert "has not verified this e-mail" in page.content()
        assert page.goto("/account").url.startswith(f"{site.url}/login")
    finally:
        ctx.close()


def test_command_line_device_login(browser: Browser, site: SsoSite, tmp_path: Path) -> None:
    env = {**clean_env(), "LABCLOUD_CLIENT_CONFIG": str(tmp_path / "client.toml"), "COLUMNS": "300"}
    proc = subprocess.Popen(
        [*LABCLOUD, "login", "--sso", "--provider", "lab", "--no-browser", "--server", site.url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"open (\S+) and enter the code (\S+)", line)
        assert found, line + proc.stderr.read()
        verification_uri, user_code = found.group(1), found.group(2)
        assert verification_uri.startswith(site.issuer)
        ctx = browser.new_context()
        ctx.set_default_timeout(30_000)
        page = ctx.new_page()
        page.goto(verification_uri)
        page.fill("input[name=user_code]", user_code)
        page.click("button[type=submit]")
        page.wait_for_selector("text=Confirm Device")  # the provider shows the code to compare
        assert user_code in page.content()
        page.click("button[autofocus]")
        _provider_login(page, "carol")
        page.wait_for_selector("text=Sign-in Success")
        ctx.close()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "logged in to" in err and "carol@lab.example" in err
    who = subprocess.run(
        [*LABCLOUD, "whoami", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(who.stdout)["email"] == "carol@lab.example"
    # The result is an ordinary API token: it works without the provider.
    token = (tmp_path / "client.toml").read_text()
    assert "lc_" in token


def test_command_line_loopback_login_where_the_provider_has_no_device_login(
    browser: Browser, site: SsoSite, tmp_path: Path
) -> None:
    env = {**clean_env(), "LABCLOUD_CLIENT_CONFIG": str(tmp_path / "client.toml"), "COLUMNS": "300"}
    command = [*LABCLOUD, "login", "--sso", "--provider", "campus", "--no-browser", "--server", site.url]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"open (\S+)", line)
        assert found and found.group(1).startswith(f"{site.url}/login/sso/campus?cli="), line
        ctx = browser.new_context()
        ctx.set_default_timeout(30_000)
        page = ctx.new_page()
        page.goto(found.group(1))
        assert page.url.startswith(site.campus), page.url
        _provider_login(page, "carol")
        page.wait_for_selector("text=you are logged in on the command line")
        assert page.url.startswith("http://127.0.0.1:") and "code=" in page.url
        # The browser itself is not logged in to labcloud: the code went to the command line only.
        assert page.goto(f"{site.url}/account").url.startswith(f"{site.url}/login")
        ctx.close()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    who = subprocess.run(
        [*LABCLOUD, "whoami", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(who.stdout)["email"] == "carol@lab.example"
