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
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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


def _absolute_sqlite_url(url: str) -> str:
    """A SQLite URL naming a relative file, with that file made absolute; any other URL as it is."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url  # here: workers and runners read settings without SQLAlchemy

    parsed = make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(absolute(database))).render_as_string(hide_password=False)


QuotaResource = Literal["cpu_hours", "gpu_hours", "concurrent_jobs", "jobs_per_day"]


class DefaultQuota(BaseModel):
    """A quota every project gets unless an admin sets its own."""

    model_config = ConfigDict(extra="forbid")

    limit: float = Field(ge=0)
    period: Literal["monthly", "daily", "none"] = "monthly"


class Route(BaseModel):
    """One routing rule: every condition given must hold; ``executor`` and ``queue`` say where to."""

    model_config = ConfigDict(extra="forbid")

    app: str | None = Field(None, description="App name; shell-style wildcards allowed (gpu-*).")
    entrypoint: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="The entrypoint's labels include these.")
    cpus_min: float | None = None
    memory_mb_min: float | None = None
    gpus_min: float | None = None
    executor: str
    queue: str | None = Field(None, description="Slurm partition or Celery queue.")


class _SettingsBase(BaseSettings):
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


class ContainerSettings(_SettingsBase):
    """The container engine's settings: the server's (part of :class:`Settings`), and those of every worker
    and runner, which read them from their options and the same ``LABCLOUD_*`` variables (no file)."""

    model_config = SettingsConfigDict(env_prefix="LABCLOUD_", extra="ignore", validate_default=True)

    container_engine: Literal["auto", "docker", "podman", "apptainer", "none"] = Field(
        "auto",
        description="What runs container apps: Docker when its daemon answers, else Podman (auto), one of "
        "them, Apptainer (untested), or none (container apps are listed as unavailable).",
    )
    docker_host: str = Field(
        "", description="The Docker daemon's address (else DOCKER_HOST, else the default)."
    )
    podman_options: list[str] = Field(
        default_factory=lambda: ["--runtime", "runc"],
        description="Podman's global options (JSON list), e.g. its --root and --runroot.",
    )
    container_run_options: list[str] = Field(
        default_factory=list,
        description='Options added to every container run (JSON list), e.g. ["--ulimit=nofile=20000:20000"]; '
        "only --ulimit, --dns, --add-host and --log-opt are accepted.",
    )
    container_auth_file: Path | None = Field(
        None,
        description="The registries' credentials for pulling container images (a Docker config.json, as "
        "`docker login` writes it): Docker finds it as DOCKER_CONFIG/config.json, Podman through "
        "--authfile. Given to pulls only, never shown.",
    )

    def container_settings(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...], Path | None]:
        """The container engine's settings, as :func:`labcloud.execution.containers.probe` takes them."""
        return (
            self.container_engine,
            self.docker_host,
            tuple(self.podman_options),
            tuple(self.container_run_options),
            self.container_auth_file,
        )

    @field_validator("container_run_options", mode="after")
    @classmethod
    def _harmless_run_options(cls, value: list[str]) -> list[str]:
        """Only options that cannot widen what a container may do: no mounts, devices, privileges."""
        allowed = ("--ulimit=", "--dns=", "--add-host=", "--log-opt=")
        bad = [option for option in value if not option.startswith(allowed)]
        if bad:
            raise ValueError(
                f"not accepted: {', '.join(bad)}; use --ulimit=..., --dns=..., --add-host=..., --log-opt=..."
            )
        return value


class Settings(ContainerSettings):
    """Every knob of a labcloud installation, documented where it is declared."""

    model_config = SettingsConfigDict(env_prefix="LABCLOUD_", extra="ignore", validate_default=True)

    home: Path = Field(DEFAULT_HOME, description="Data dir: database (SQLite), files, job folders, secrets.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in the data dir.")
    secret_key: SecretStr = Field(
        SecretStr(""), description="Signs access tokens; empty means a key generated once in the data dir."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
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

    apps_dir: Path | None = Field(None, description="Extra app registry files; default $LABCLOUD_HOME/apps.")
    executor: str = Field(
        "local",
        description="Where jobs run unless a route says otherwise: local (this machine), pull (remote "
        "workers pull them), slurm (sbatch to a Slurm cluster) or celery (a Celery worker fleet). Checked "
        "when the executors load, at start.",
    )
    default_quotas: dict[QuotaResource, DefaultQuota] = Field(
        default_factory=dict,
        description="Quotas every project (personal ones too) starts with, by resource, e.g. "
        '{"cpu_hours": {"limit": 500, "period": "monthly"}, '
        '"concurrent_jobs": {"limit": 50, "period": "none"}}; '
        "an admin changes a project's own. Empty: none.",
    )
    fair_share_half_life_h: float = Field(
        168.0,
        ge=0,
        description="Dispatch: among users with as many jobs running, the job whose project used the "
        "fewest CPU-hours lately goes first, each hour of use weighing half as much after this many hours "
        "(Slurm's fair-share half-life); 0: projects' use does not count.",
    )
    smtp_url: str = Field(
        "",
        description="The SMTP server for e-mail: smtp://[user:password@]host[:port][?starttls=auto|required|"
        "never] or smtps://... (TLS at once); empty: no e-mail.",
    )
    mail_from: str = Field("labcloud <labcloud@localhost>", description="The sender of labcloud's e-mail.")
    smtp_ca_file: str = Field(
        "",
        description="CA certificates to trust for the SMTP server's TLS (a PEM file); empty: the system's.",
    )
    smtp_timeout_s: float = Field(20.0, gt=0, description="How long one SMTP conversation may take.")
    mail_retry_s: float = Field(
        60.0, gt=0, description="After a mail could not be sent: the wait before the next try."
    )
    mail_digest_window_s: float = Field(
        30.0,
        ge=0,
        description="A user's first ended job waits this long for others to end: several make one mail.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Webhooks may target loopback, link-local and private addresses (a lab's own "
        "services); off, such targets are refused when subscribing and on every try.",
    )
    webhook_retry_s: float = Field(
        30.0,
        gt=0,
        description="Webhooks: the first wait before a failed try is tried again; it doubles (at most 6 h).",
    )
    webhook_max_attempts: int = Field(
        12, ge=1, le=50, description="Webhooks: tries of one delivery before it is given up."
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=120, description="Webhooks: how long one try may take.")
    webhook_pause_after: int = Field(
        5, ge=1, description="Webhooks: a subscription that gave up on this many events in a row is paused."
    )
    quota_min_cut_s: float = Field(
        60.0,
        gt=0,
        description="In a project that cuts a job's time limit to what its quota has left, the shortest "
        "limit worth running; a job that would get less is refused.",
    )
    executor_routes: list[Route] = Field(
        default_factory=list,
        description="Rules sending jobs to an executor and queue/partition, first match wins, e.g. "
        '[{"gpus_min": 1, "executor": "slurm", "queue": "gpu"}]. An entrypoint\'s own executor wins.',
    )
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
    tes_allowed_images: list[str] = Field(
        default_factory=lambda: ["*"],
        description="GA4GH TES: the images a task's executors may name, as shell-style patterns (JSON list), "
        'e.g. ["labcloud/*", "quay.io/biocontainers/*"]; others are refused (400). The default allows '
        "every image, which means every image the container engine holds: labcloud never pulls for a task.",
    )
    tes_network: Literal["none", "default", "host"] = Field(
        "none",
        description="GA4GH TES: the network of a task's containers: none, the engine's default network, or "
        "the host's (e.g. for tasks that reach an object store on this machine, as Snakemake's do).",
    )
    tes_user: str = Field(
        "65534:65534", description="GA4GH TES: the uid:gid a task's containers run as (never root)."
    )
    tes_timeout_s: int = Field(
        86400, ge=1, le=30 * 86400, description="GA4GH TES: the time limit of a task, all executors together."
    )
    tes_default_ram_gb: float = Field(
        1.0, gt=0, description="GA4GH TES: the memory of a task that asks for none (resources.ram_gb)."
    )
    tes_max_content_bytes: int = Field(
        1 * 2**20, ge=128 * 1024, description="GA4GH TES: the largest inline content of one input."
    )
    tes_max_download_bytes: int = Field(
        10 * 2**30, ge=1, description="GA4GH TES: the largest file an http(s) input may bring."
    )
    tes_download_private: bool = Field(
        False,
        description="GA4GH TES: whether http(s) inputs may come from loopback, link-local or private "
        "addresses (checked after DNS resolution and on every redirect).",
    )
    tes_s3_buckets: list[str] = Field(
        default_factory=list,
        description="GA4GH TES: the buckets (shell-style patterns, JSON list) whose s3:// URLs tasks may "
        "read inputs from and write outputs to, with the tes_s3_* account; every user who may create tasks "
        "can then read and write them. Empty: s3:// URLs are refused.",
    )
    tes_s3_endpoint_url: str = Field("", description="GA4GH TES: the S3 endpoint of s3:// URLs; empty: AWS.")
    tes_s3_region: str = Field("us-east-1", description="GA4GH TES: the S3 region of s3:// URLs.")
    tes_s3_access_key_id: str = Field("", description="GA4GH TES: the access key for s3:// URLs.")
    tes_s3_secret_access_key: SecretStr = Field(
        SecretStr(""), description="GA4GH TES: the secret key for s3:// URLs (never shown)."
    )
    job_max_attempts: int = Field(3, ge=1, description="Runs a job gets when its runner is lost.")
    kill_grace_s: float = Field(5.0, ge=0, description="Seconds between TERM and KILL on timeout or cancel.")
    max_upload_bytes: int = Field(50 * 2**30, ge=1, description="Largest file one upload may store.")
    max_json_body_bytes: int = Field(
        4 * 2**20,
        ge=1024,
        description="Largest request body the API parses (JSON, forms); larger ones are refused with 413.",
    )
    max_log_chunk_bytes: int = Field(
        4 * 2**20, ge=1024, description="Largest log chunk a worker may send in one request (413 beyond)."
    )
    storage_quota_bytes: int = Field(
        0, ge=0, description="Default storage limit per user (admins can set one per user); 0 means none."
    )
    project_storage_bytes: int = Field(
        0,
        ge=0,
        description="Default storage limit of a shared project's files (admins can set one per project); "
        "0 means none.",
    )
    storage_url: str = Field(
        "", description="Where file bytes live: empty for the data dir, or s3://bucket/prefix."
    )
    s3_endpoint_url: str = Field("", description="S3 endpoint, e.g. http://127.0.0.1:8333; empty for AWS.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str = Field("", description="S3 access key; empty uses the standard AWS sources.")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    presign_expiry_s: int = Field(
        900, ge=30, le=7 * 24 * 3600, description="Lifetime of presigned download and upload URLs."
    )
    upload_expiry_hours: float = Field(
        24, gt=0, description="Resumable uploads left unfinished this long are removed."
    )
    housekeeping_interval_s: float = Field(
        600, gt=0, description="How often expired uploads and unreferenced stored objects are cleaned."
    )
    apps_check_interval_s: float = Field(
        1.0, ge=0, description="How often app files are checked for changes."
    )
    scheduler_interval_s: float = Field(1.0, gt=0, description="Longest pause between dispatch rounds.")
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
        return _absolute_sqlite_url(value)

    @field_validator("tes_user", mode="after")
    @classmethod
    def _tes_user_not_root(cls, value: str) -> str:
        from labcloud.registry.models import ContainerOptions  # (its checks: numeric, never root)

        return ContainerOptions(user=value).user

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


class PluginSettings(_SettingsBase):
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
"""
