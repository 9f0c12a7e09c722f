"""``labcloud db``: schema migrations."""

from __future__ import annotations

import typer

from labcloud.cli.common import console, load_settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the schema migrations (needed before the first start on PostgreSQL and after upgrades)."""
    from labcloud.db import migrate

    settings = load_settings()
    migrate.upgrade(settings, revision)
    console.print(
        f"database schema is at {migrate.head_revision(settings) if revision == 'head' else revision}"
    )


@app.command()
def current() -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from labcloud.db import migrate
    from labcloud.db.engine import make_engine

    settings = load_settings()
    engine = make_engine(settings)
    try:
        typer.echo(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision(settings)}")
    finally:
        engine.dispose()
