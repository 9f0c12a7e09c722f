"""Apply and inspect Alembic migrations without an alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from labcloud.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Percent signs in passwords would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", settings.effective_database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    settings.ensure_home()
    command.upgrade(alembic_config(settings), revision)


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(settings: Settings, engine: Engine) -> bool:
    return current_revision(engine) == head_revision(settings)


def newer_revision(settings: Settings, engine: Engine) -> str | None:
    """The database's revision when this code does not know it: a newer release's ``db upgrade`` ran, and
    this server is an older replica still serving while the upgrade rolls out (its migrations only expanded
    the schema: docs/upgrades.md). None when the revision is one of ours (or there is none)."""
    revision = current_revision(engine)
    if revision is None:
        return None
    scripts = ScriptDirectory.from_config(alembic_config(settings))
    known = {script.revision for script in scripts.walk_revisions()}
    return None if revision in known else revision
