"""``labcloud login``, ``logout`` and ``whoami``."""

from __future__ import annotations

import contextlib
import socket
import sys

import typer

from labcloud.cli.client.ui import (
    connect,
    err,
    fail,
    handle_errors,
    key_values,
    local_time,
    out,
    print_json,
    report,
)
from labcloud.client.config import ClientConfig, config_path, resolve
from labcloud.client.errors import ClientError

TOKEN_SCOPES = ["read", "write"]


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True)
    else:
        raise fail("no password: pass --password-stdin and write it to standard input, or use a terminal")
    if not password:
        raise fail("the password is empty")
    return password


@handle_errors
def login(
    server: str | None = typer.Option(
        None,
        "--server",
        help="Server URL (default: $LABCLOUD_SERVER, the stored one, http://127.0.0.1:8000).",
    ),
    email: str | None = typer.Option(None, "--email", help="Your account's email (asked when not given)."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input."
    ),
    token: str | None = typer.Option(
        None, "--token", help="Store this API token (checked with the server) instead of logging in."
    ),
    sso: bool = typer.Option(
        False, "--sso", help="Log in through the server's single sign-on provider (in a browser)."
    ),
    provider: str | None = typer.Option(
        None, "--provider", help="With --sso: which provider, when the server has several."
    ),
    no_browser: bool = typer.Option(
        False, "--no-browser", help="With --sso: print the address to open rather than open a browser."
    ),
) -> None:
    """Log in and store a personal API token for this machine (in the client config file, mode 0600).

    With --sso the provider's device login is used where it offers one (a code to enter in any browser),
    else a browser on this machine."""
    config = ClientConfig.load()
    target = resolve(config, server).server
    with connect(target) as client:
        if token:
            client.token = token
            me = client.me()
            new = ClientConfig(server=target, token=token, email=me["email"])
        else:
            if sso:
                from labcloud.cli.client.sso_login import choose_provider, sso_token

                try:
                    client.token = sso_token(client, choose_provider(client, provider), not no_browser)
                except ClientError as exc:
                    raise report(exc, login_hint=False) from None
            else:
                if not email:
                    if not sys.stdin.isatty():
                        raise fail("pass --email (no terminal to ask on)")
                    email = typer.prompt("Email")
                password = _read_password(password_stdin)
                try:
                    client.login(email, password)
                except ClientError as exc:
                    raise report(exc, login_hint=False) from None
            me = client.me()
            email = str(me["email"])
            admin = bool(me.get("is_admin"))  # an admin's CLI can manage users and workers
            scopes = [*TOKEN_SCOPES, "admin"] if admin else TOKEN_SCOPES
            created = client.create_token(f"cli@{socket.gethostname()}", scopes)
            new = ClientConfig(
                server=target, token=created["token"], email=email, token_id=str(created.get("id", ""))
            )
            if config.token_id and config.server == target and config.token != new.token:
                # This machine's previous token is replaced: revoke it rather than leave it lying about.
                with contextlib.suppress(ClientError):
                    client.revoke_token(config.token_id)
    path = new.save()
    err.print(f"logged in to {target} as {new.email}; token stored in {path}")


@handle_errors
def logout() -> None:
    """Revoke the stored API token (when this client created it) and forget it."""
    config = ClientConfig.load()
    if not config.token:
        err.print("not logged in")
        return
    if config.token_id:
        with connect(config.server, config.token) as client:
            try:
                client.revoke_token(config.token_id)
            except ClientError as exc:
                if exc.status not in (401, 404):
                    err.print(f"could not revoke the token on the server: {exc.detail}")
    config.token = config.token_id = ""
    path = config.save()
    err.print(f"logged out of {config.server} (token removed from {path})")


@handle_errors
def whoami(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the account the stored (or $LABCLOUD_TOKEN) token belongs to."""
    target = resolve(ClientConfig.load())
    if not target.token:
        raise fail(f"not logged in to {target.server} (run labcloud login, or set LABCLOUD_TOKEN)")
    with connect(target.server, target.token) as client:
        me = client.me()
    if json_out:
        print_json({**me, "server": target.server})
        return
    out.print(
        key_values(
            [
                ("email", me.get("email", "")),
                ("name", me.get("name", "")),
                ("admin", "yes" if me.get("is_admin") else "no"),
                ("member since", local_time(me.get("created_at"))),
                ("server", target.server),
                ("token from", "LABCLOUD_TOKEN" if target.token_from_env else str(config_path())),
            ]
        )
    )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(login)
    app.command(rich_help_panel="Client")(logout)
    app.command(rich_help_panel="Client")(whoami)
