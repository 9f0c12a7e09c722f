"""Where the client keeps the server address and API token, and how the environment overrides them.

The file is JSON, ``{"server": URL, "token": "lc_...", "email": ..., "token_id": ...}``, at
``$LABCLOUD_CLIENT_CONFIG``, else ``$XDG_CONFIG_HOME/labcloud/client.json``, else
``~/.config/labcloud/client.json``; mode 0600 in a 0700 folder. ``LABCLOUD_SERVER`` and ``LABCLOUD_TOKEN``
win over the file, so scripts need no login.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
UPLOAD_CHUNK = 8 << 20  # bytes per request of a resumable upload
UPLOAD_RETRIES = 8  # failed attempts in a row before an upload gives up


def normalise_server(url: str) -> str:
    """``host:8000`` → ``http://host:8000``; no trailing slash."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def default_dir() -> Path:
    """``$XDG_CONFIG_HOME/labcloud`` or ``~/.config/labcloud``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labcloud"


def config_path() -> Path:
    explicit = os.environ.get("LABCLOUD_CLIENT_CONFIG")
    return Path(explicit).expanduser() if explicit else default_dir() / "client.json"


def upload_state_path() -> Path:
    """Beside the config file: ``uploads.json``."""
    return config_path().parent / "uploads.json"


class ConfigError(Exception):
    """The config file exists but cannot be used."""


@dataclass
class ClientConfig:
    server: str = ""
    token: str = ""
    email: str = ""
    token_id: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        """The stored values; an absent file is an empty config, an unreadable one an error."""
        path = path or config_path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} is not a JSON object")
        return cls(**{k: str(raw.get(k) or "") for k in ("server", "token", "email", "token_id")})

    def save(self, path: Path | None = None) -> Path:
        """Write atomically with mode 0600; a folder that has to be created gets mode 0700."""
        path = path or config_path()
        folder = path.parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
        elif folder == default_dir():
            folder.chmod(0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(self), fh, indent=2)
                fh.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@dataclass
class Target:
    """The server and token a command uses, and where each came from (for messages)."""

    server: str
    token: str
    token_from_env: bool


def resolve(config: ClientConfig, server: str | None = None) -> Target:
    """Command-line ``server`` > ``LABCLOUD_SERVER`` > stored > default; ``LABCLOUD_TOKEN`` > stored.

    A stored token is only used for the server it was issued by."""
    chosen = server or os.environ.get("LABCLOUD_SERVER") or config.server or DEFAULT_SERVER
    chosen = normalise_server(chosen)
    env_token = os.environ.get("LABCLOUD_TOKEN", "")
    if env_token:
        return Target(chosen, env_token, True)
    stored = config.token if config.server and normalise_server(config.server) == chosen else ""
    return Target(chosen, stored, False)


class UploadState:
    """The URLs of unfinished resumable uploads, so that running an upload again after a crash continues it.

    A JSON object ``{key: {"url": ..., "at": unix time}}`` (see ``http.upload_key``), mode 0600, changed
    under a lock (threads of this process and other processes alike); entries older than ``max_age_s``
    are dropped (the server has long expired those uploads).
    """

    def __init__(self, path: Path | None = None, max_age_s: float = 7 * 86400) -> None:
        self.path = path or upload_state_path()
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                import fcntl  # not on Windows: there only this process's threads are kept apart
            except ImportError:
                yield
                return
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a missing or damaged file only means starting uploads afresh
        return raw if isinstance(raw, dict) else {}

    def _save(self, entries: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entries, fh, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._load().get(key)
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            return str(entry["url"])
        return None

    def put(self, key: str, url: str) -> None:
        with self._locked():
            entries = self._load()
            now = time.time()
            entries = {
                k: v
                for k, v in entries.items()
                if isinstance(v, dict) and now - float(v.get("at", 0)) < self.max_age_s
            }
            entries[key] = {"url": url, "at": now}
            self._save(entries)

    def drop(self, key: str) -> None:
        with self._locked():
            entries = self._load()
            if entries.pop(key, None) is not None:
                self._save(entries)
