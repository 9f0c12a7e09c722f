"""Configuration: ``LABCLOUD_*`` environment variables over a TOML file over defaults.

The TOML file is ``$LABCLOUD_CONFIG`` when set, else ``$LABCLOUD_HOME/labcloud.toml``. Reading settings never
does network I/O; only files under the data dir are touched.

Every path setting (and a SQLite database URL) is made absolute once, when settings load, against the working
directory of that moment: the server, its job supervisors (which start in ``/``), its workers and
``labcloud admin`` run from another folder then all mean the same files.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from labcloud.settings.backup import BackupSettings as BackupSettings
from labcloud.settings.containers import ContainerSettings as ContainerSettings
from labcloud.settings.devices import DeviceSettings as DeviceSettings
from labcloud.settings.dispatch import DefaultQuota as DefaultQuota
from labcloud.settings.dispatch import DispatchSettings as DispatchSettings
from labcloud.settings.dispatch import QuotaResource as QuotaResource
from labcloud.settings.dispatch import Route as Route
from labcloud.settings.notifications import MailSettings as MailSettings
from labcloud.settings.notifications import WebhookSettings as WebhookSettings
from labcloud.settings.retention import RetentionSettings as RetentionSettings
from labcloud.settings.sources import CONFIG_FILE_NAME as CONFIG_FILE_NAME
from labcloud.settings.sources import DEFAULT_HOME as DEFAULT_HOME
from labcloud.settings.sources import PluginSettings as PluginSettings
from labcloud.settings.sources import absolute as absolute
from labcloud.settings.sources import absolute_sqlite_url
from labcloud.settings.sources import config_path_from_env as config_path_from_env
from labcloud.settings.sources import home_from_env as home_from_env
from labcloud.settings.sources import render_config_file as render_config_file
from labcloud.settings.sso import SsoProvider as SsoProvider
from labcloud.settings.sso import SsoSettings as SsoSettings
from labcloud.settings.storage import StorageSettings as StorageSettings
from labcloud.settings.tes import TesSettings as TesSettings


class Settings(
    ContainerSettings,
    DispatchSettings,
    StorageSettings,
    MailSettings,
    WebhookSettings,
    TesSettings,
    DeviceSettings,
    BackupSettings,
    RetentionSettings,
    SsoSettings,
):
    """Every knob of a labcloud installation, documented where it is declared."""

    model_config = SettingsConfigDict(env_prefix="LABCLOUD_", extra="ignore", validate_default=True)

    home: Path = Field(DEFAULT_HOME, description="Data dir: database (SQLite), files, job folders, secrets.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in the data dir.")
    secret_key: SecretStr = Field(
        SecretStr(""), description="Signs access tokens; empty means a key generated once in the data dir."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    http_keep_alive_s: int = Field(
        65,
        ge=1,
        le=3600,
        description="How long an idle HTTP connection is kept open. Longer than workers' heartbeat interval "
        "(at most 10 s), so a fleet of devices does not connect anew for every heartbeat; behind a proxy, "
        "longer than the proxy's keep-alive to its upstream.",
    )
    base_url: str = Field(
        "", description="Public URL of the service, used in messages; default http://host:port"
    )

    access_token_minutes: int = Field(30, ge=1, description="Lifetime of tokens issued by login.")
    api_token_max_days: int = Field(365, ge=1, description="Longest expiry a personal API token may have.")
    open_signup: bool = Field(False, description="Anyone may register; otherwise admins invite users.")
    min_password_length: int = Field(10, ge=6)

    login_max_failures: int = Field(
        10,
        ge=1,
        description="Failed logins of one account from one address within the window before each further "
        "try waits a doubling delay (429 with Retry-After).",
    )
    login_address_max_failures: int = Field(
        100,
        ge=1,
        description="Failed logins from one address, over all accounts, before its tries are slowed down "
        "the same way (high: a lab behind one NAT shares an address).",
    )
    login_window_seconds: int = Field(
        300, ge=1, description="Failures older than this are forgotten; also the longest delay."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
        'are believed, e.g. ["127.0.0.1", "10.0.0.0/8"]; empty: the connecting address is the client.',
    )

    initial_admin_email: str = Field("admin@labcloud.local", description="Admin created on first start.")
    initial_admin_password: SecretStr = Field(
        SecretStr(""), description="Password of the first admin; empty means generate and print it once."
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log_worker_calls: bool = Field(
        False,
        description="Also write remote workers' answered heartbeats and claims to the access log (refusals "
        "and errors always are): a fleet makes many a second.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object a line (time, level, logger, message, request_id)."
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token that lets a Prometheus anywhere read /metrics; empty: only this machine "
        "may (never through a proxy).",
    )

    apps_dir: Path | None = Field(None, description="Extra app registry files; default $LABCLOUD_HOME/apps.")
    runner_url: str = Field(
        "",
        description="The URL at which runners on Slurm nodes and Celery workers reach this server's worker "
        "API; default base_url, else http://host:port.",
    )
    runner_command: str = Field(
        "",
        description="How a Slurm job starts the runner on a node (its options follow); default this Python "
        "with -m labcloud.worker.runjob. `labcloud run-job` works too.",
    )
    runner_work_dir: str = Field(
        "/tmp/labcloud-runs", description="Where runners on Slurm nodes and Celery workers stage jobs."
    )
    lease_seconds: int = Field(
        60, ge=1, le=3600, description="A worker's hold on a job; heartbeats renew it, expiry re-queues."
    )
    local_cpus: float = Field(0, ge=0, description="CPUs the local executor may fill; 0 means all of them.")
    local_memory_mb: int = Field(
        0, ge=0, description="Memory the local executor may fill; 0 means 80% of RAM."
    )
    sandbox: Literal["auto", "required", "off"] = Field(
        "auto",
        description="Run jobs under bubblewrap: when it works (without it jobs never run as root: they are "
        "refused), always (refuse jobs otherwise), or never (jobs run as labcloud's own user, or as job_user "
        "when that is root).",
    )
    job_user: str = Field(
        "nobody",
        description="The unprivileged account jobs run as when labcloud runs as root (a name or UID[:GID]).",
    )
    container_pull_timeout_s: float = Field(
        3600, gt=0, description="Longest an admin's pull of an app's image may take."
    )
    job_max_attempts: int = Field(3, ge=1, description="Runs a job gets when its runner is lost.")
    kill_grace_s: float = Field(5.0, ge=0, description="Seconds between TERM and KILL on timeout or cancel.")
    warm_launcher: bool = Field(
        True,
        description="Start each local job's supervisor by forking a pre-loaded launcher process (about "
        "half the CPU of a short job) rather than as a new interpreter.",
    )
    max_json_body_bytes: int = Field(
        4 * 2**20,
        ge=1024,
        description="Largest request body the API parses (JSON, forms); larger ones are refused with 413.",
    )
    max_log_chunk_bytes: int = Field(
        4 * 2**20, ge=1024, description="Largest log chunk a worker may send in one request (413 beyond)."
    )
    housekeeping_interval_s: float = Field(
        600, gt=0, description="How often expired uploads and unreferenced stored objects are cleaned."
    )
    audit_keep_days: int = Field(
        365, ge=0, le=36500, description="Audit log events older than this are deleted; 0 keeps them all."
    )
    apps_check_interval_s: float = Field(
        1.0, ge=0, description="How often app files are checked for changes."
    )
    sqlite_busy_timeout_s: float = Field(
        10.0,
        gt=0,
        description="SQLite: how long a write waits for another writer's lock; then the request is "
        "answered 503 with Retry-After (nothing is claimed done).",
    )
    leader_check_interval_s: float = Field(
        2.0,
        gt=0,
        description="Replicas sharing a database: how often a follower tries to take over dispatch, and "
        "a leader confirms it still holds the lock.",
    )

    @field_validator("database_url", mode="after")
    @classmethod
    def _absolute_sqlite_file(cls, value: str) -> str:
        return absolute_sqlite_url(value)

    @classmethod
    def file_source(cls, settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource:
        return TomlConfigSettingsSource(settings_cls, toml_file=config_path_from_env())

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'labcloud.sqlite3'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_apps_dir(self) -> Path:
        return self.apps_dir or self.home / "apps"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def files_dir(self) -> Path:
        """Blobs of the local-disk store."""
        return self.home / "files"

    @property
    def uploads_dir(self) -> Path:
        """Uploads in progress: bytes are written here, then published into the store whole."""
        return self.home / "uploads"

    @property
    def public_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"

    @property
    def effective_runner_url(self) -> str:
        return (self.runner_url or self.public_url).rstrip("/")

    def ensure_home(self) -> None:
        """The data dir, private to labcloud's user (mode 0700, also for one made by an older version)."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.home.stat().st_mode & 0o077:
            self.home.chmod(0o700)

    @cached_property
    def signing_key(self) -> str:
        """The configured secret, or one generated once and kept (mode 0600) in the data dir."""
        configured = self.secret_key.get_secret_value()
        if configured:
            return configured
        self.ensure_home()
        path = self.home / "secret_key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()
