"""Where settings come from: ``LABCLOUD_*`` environment variables over a TOML file over defaults, every
path made absolute; the base of :class:`labcloud.settings.Settings` and of every plugin's settings."""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_HOME = Path("labcloud-data")
CONFIG_FILE_NAME = "labcloud.toml"


def absolute(path: Path | str) -> Path:
    """``path`` with ``~`` expanded, made absolute against the working directory (``..`` folded)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def home_from_env() -> Path:
    return absolute(os.environ.get("LABCLOUD_HOME", DEFAULT_HOME))


def config_path_from_env() -> Path:
    explicit = os.environ.get("LABCLOUD_CONFIG")
    return absolute(explicit) if explicit else home_from_env() / CONFIG_FILE_NAME


def absolute_sqlite_url(url: str) -> str:
    """A SQLite URL naming a relative file, with that file made absolute; any other URL as it is."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url  # here: workers and runners read settings without SQLAlchemy

    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(absolute(database))).render_as_string(hide_password=False)


class SettingsBase(BaseSettings):
    """What every settings class shares: ``LABCLOUD_*`` environment over the TOML file over defaults, and
    every path setting made absolute."""

    @field_validator("*", mode="after")
    @classmethod
    def _absolute_paths(cls, value: object) -> object:
        """Every path setting, whatever its source, as an absolute path (see the module's docstring)."""
        return absolute(value) if isinstance(value, Path) else value

    @classmethod
    def file_source(cls, settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
        """What the configuration file says: nothing, unless a class reads one."""
        return InitSettingsSource(settings_cls, {})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, cls.file_source(settings_cls))


class PluginSettings(SettingsBase):
    """The settings of one plugin (an executor), declared in the plugin's own module and read like
    :class:`Settings`: ``LABCLOUD_*`` environment over the TOML file over defaults. The plugin gives its
    prefix once, ``model_config = SettingsConfigDict(env_prefix="LABCLOUD_SLURM_")``; its field ``poll_s`` is
    then ``LABCLOUD_SLURM_POLL_S`` in the environment and ``slurm_poll_s`` in the file."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    @classmethod
    def key(cls, field: str) -> str:
        """What the configuration file calls one of the fields (``slurm_poll_s``)."""
        return cls.model_config.get("env_prefix", "").removeprefix("LABCLOUD_").lower() + field

    @classmethod
    def file_source(cls, settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
        """The file's keys that start with the plugin's prefix, without it."""
        prefix = cls.key("")
        path = config_path_from_env()
        toml = tomllib.loads(path.read_text()) if path.is_file() else {}
        ours = {k.removeprefix(prefix): v for k, v in toml.items() if k.startswith(prefix)}
        return InitSettingsSource(settings_cls, ours)


def render_config_file() -> str:
    """A commented TOML config with fresh secrets, for ``labcloud init-config``."""
    return f"""# labcloud configuration. Environment variables LABCLOUD_<NAME> override each value.
# Keep this file private: it holds the key that signs access tokens.

# Where the database (SQLite), uploaded files and job folders live. A relative path (here and in every
# other path setting) is taken against the folder the command starts in: prefer an absolute one.
# home = "labcloud-data"

# Empty: SQLite in the data dir. PostgreSQL: "postgresql+psycopg://user:password@host:5432/labcloud"
database_url = ""

secret_key = "{secrets.token_urlsafe(48)}"

host = "127.0.0.1"
port = 8000

# Minutes a login token lasts; personal API tokens have their own expiry.
access_token_minutes = 30

# Anyone may create an account (otherwise admins invite users).
open_signup = false

# The first admin, created on first start when there are no users.
initial_admin_email = "admin@labcloud.local"
initial_admin_password = "{secrets.token_urlsafe(12)}"

# Single sign-on through OpenID Connect providers (README: "Single sign-on"), one table each, at the end:
# [[sso_providers]]
# name = "lab"
# label = "Log in with Lab ID"
# discovery_url = "https://id.lab.example/realms/lab"
# client_id = "labcloud"
# client_secret = "..."
# allowed_domains = ["lab.example"]
"""
