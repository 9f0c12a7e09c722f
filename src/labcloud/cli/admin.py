"""``labcloud admin``: account administration from scripts, without the HTTP API."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from labcloud.cli.common import fail, load_settings, say

app = typer.Typer(help="Administration from the server's shell.", no_args_is_help=True)


@app.command("create-user")
def create_user(
    email: str = typer.Argument(..., help="The new user's email."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator."),
    name: str = typer.Option("", help="Display name."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input."
    ),
) -> None:
    """Create a user. Without --password-stdin, a password is asked for (or generated when not a terminal)."""
    from labcloud import security
    from labcloud.errors import LabcloudError
    from labcloud.runtime import Runtime, SchemaOutOfDate, database_location, prepare_database
    from labcloud.services import audit, users

    settings = load_settings()
    generated = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = generated = security.generate_password()
    where = database_location(settings)
    new_database = settings.is_sqlite and not Path(where).exists()
    ctx = Runtime.create(settings)
    try:
        prepare_database(ctx)
        with audit.scoped(audit.shell_scope()), ctx.db.session() as session:
            user = users.create_user(
                session, settings, email=email, password=password, name=name, is_admin=admin, issued=True
            )
    except SchemaOutOfDate as exc:
        raise fail(str(exc)) from None
    except LabcloudError as exc:
        raise fail(exc.detail) from None
    finally:
        ctx.db.dispose()
    say(f"created {'admin' if admin else 'user'} {user.email} in {where}")
    if new_database:
        say(
            f"note: there was no database in the data dir {settings.home}, so a new one was made; a server "
            "started with another LABCLOUD_HOME (or, with the default home, in another folder) does not see "
            "this account."
        )
    if generated:
        typer.echo(f"password: {generated}")


@app.command("token")
def admin_token(
    email: str = typer.Argument(..., help="The administrator's email."),
    name: str = typer.Option("recovery", help="The token's name."),
    days: int = typer.Option(1, min=1, help="Days until it expires."),
) -> None:
    """Print a new personal API token (read, write, admin) of an administrator: a way back in when single
    sign-on fails and passwords are turned off (password_login = false). The token is shown once."""
    from datetime import timedelta

    from labcloud.db.types import utcnow
    from labcloud.errors import LabcloudError
    from labcloud.runtime import Runtime, SchemaOutOfDate, prepare_database
    from labcloud.security import ALL_SCOPES, Scope
    from labcloud.services import audit, tokens, users

    settings = load_settings()
    ctx = Runtime.create(settings)
    try:
        prepare_database(ctx)
        with audit.scoped(audit.shell_scope()), ctx.db.session() as session:
            user = users.find_by_email(session, users.normalise_email(email))
            if user is None or not user.is_admin or not user.is_active:
                raise fail(f"{email} is no active administrator here (labcloud admin create-user --admin)")
            _row, secret = tokens.create_api_token(
                session,
                settings,
                user,
                name=name,
                scopes=list(ALL_SCOPES),
                expires_at=utcnow() + timedelta(days=days),
                caller_scopes=[s.value for s in Scope],
            )
    except SchemaOutOfDate as exc:
        raise fail(str(exc)) from None
    except LabcloudError as exc:
        raise fail(exc.detail) from None
    finally:
        ctx.db.dispose()
    say(f"token for {user.email}, expires in {days} day(s); use it as Authorization: Bearer ...")
    typer.echo(secret)
