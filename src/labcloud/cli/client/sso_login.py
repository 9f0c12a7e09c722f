"""``labcloud login --sso``: a login through the server's OpenID Connect provider.

The device login (RFC 8628) when the provider offers it: this prints a code to enter on a page that any
browser, on any machine, opens. Otherwise the loopback login: a browser on this machine opens the server's
login page and hands the result back to a port of 127.0.0.1 that this command listens on, as a one-time code
that only this command can redeem (it holds the PKCE verifier). Either way the server answers a login token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from labcloud.cli.client.ui import err, fail
from labcloud.client.calls import Call
from labcloud.client.connection import Connection
from labcloud.client.errors import ClientError

WAIT_S = 900.0


def choose_provider(client: Connection, name: str | None) -> str:
    providers: list[dict[str, Any]] = client.call(Call("GET", "/auth/sso/providers"))
    names = [str(p["name"]) for p in providers]
    if not names:
        raise fail(f"{client.base_url} has no single sign-on provider")
    if name is None:
        if len(names) > 1:
            raise fail(f"choose a provider with --provider: {', '.join(names)}")
        return names[0]
    if name not in names:
        raise fail(f"no provider {name!r}; there are: {', '.join(names)}")
    return name


def sso_token(client: Connection, provider: str, open_browser: bool) -> str:
    """A login token for whoever logs in at ``provider``."""
    try:
        device = client.call(Call("POST", f"/auth/sso/{quote(provider)}/device"))
    except ClientError as exc:
        if exc.status != 409:
            raise
        return _loopback(client, provider, open_browser)
    return _device(client, device, open_browser)


def _device(client: Connection, device: dict[str, Any], open_browser: bool) -> str:
    complete = device.get("verification_uri_complete")
    err.print(f"To log in, open {device['verification_uri']} and enter the code {device['user_code']}")
    if complete:
        err.print(f"(or open {complete})")
        if open_browser:
            webbrowser.open(str(complete))
    interval = float(device.get("interval") or 5)
    deadline = time.monotonic() + min(float(device.get("expires_in") or WAIT_S), WAIT_S)
    while time.monotonic() < deadline:
        time.sleep(interval)
        call = Call("POST", "/auth/sso/device/token", json={"handle": device["handle"]}, returns="response")
        response = client.call(call)
        if response.status_code == 202:
            continue
        return str(response.json()["access_token"])
    raise fail("the login was not completed in time; run labcloud login --sso again")


def _catcher(found: list[str]) -> type[BaseHTTPRequestHandler]:
    """A handler that keeps the ``code`` of the browser's redirect in ``found``."""

    class Catch(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            code = parse_qs(urlsplit(self.path).query).get("code", [""])[0]
            if code:
                found.append(code)
            body = b"labcloud: you are logged in on the command line; you may close this window.\n"
            self.send_response(200 if code else 400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Catch


def _loopback(client: Connection, provider: str, open_browser: bool) -> str:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    found: list[str] = []
    server = HTTPServer(("127.0.0.1", 0), _catcher(found))
    port = server.server_address[1]
    url = f"{client.base_url}/login/sso/{quote(provider)}?cli={port}&challenge={challenge}"
    err.print(f"To log in, open {url}")
    if open_browser:
        webbrowser.open(url)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    try:
        while not found and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
    if not found:
        raise fail("the login was not completed in time; run labcloud login --sso again")
    answer = client.call(Call("POST", "/auth/sso/cli-token", json={"code": found[0], "verifier": verifier}))
    return str(answer["access_token"])
