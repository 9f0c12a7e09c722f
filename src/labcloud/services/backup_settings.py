"""The settings part of a backup: the installation's effective settings and its configuration file, with
the secrets left out unless asked for.

Secrets are the settings declared as secret (``SecretStr``: the signing key, the first admin's password,
S3 secret keys, slurmrestd's token ...), any setting whose name says it is one (``..._password``,
``..._token``, ``...secret_key``), and the password inside a URL (``database_url``, ``smtp_url``, a
Celery broker's).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from labcloud.settings import Settings

REDACTED = "(left out of the backup: a secret)"
_SECRET_NAME = re.compile(r".*(_password|_token|secret_key|secret_access_key|_secret)")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*):(?P<password>[^@/\s\"']*)@")


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.annotation is SecretStr}


def _plugin_settings(settings: Settings) -> list[Any]:
    """The settings of the executors in use (each a PluginSettings), read as the server reads them."""
    from labcloud.execution.executors import PLUGINS, plugin_class
    from labcloud.services.routing import executors_in_use

    found = []
    for name in sorted(n for n in executors_in_use(settings) if n in PLUGINS):
        model = plugin_class(name).settings_model
        if model is not None:
            try:
                found.append(model())
            except Exception:  # settings the server would refuse: not ours to judge here
                continue
    return found


def secret_names(settings: Settings) -> set[str]:
    """The names (as in the configuration file) of the settings that are secrets."""
    names = _secret_fields(type(settings))
    for plugin in _plugin_settings(settings):
        names |= {plugin.key(field) for field in _secret_fields(type(plugin))}
    return names


def is_secret(name: str, known: set[str]) -> bool:
    return name in known or bool(_SECRET_NAME.fullmatch(name))


def without_password(text: str) -> str:
    """``text`` with the password of every URL in it replaced."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:REDACTED@", text)


def has_url_password(text: str) -> bool:
    return any(m.group("password") != "REDACTED" for m in _URL_PASSWORD.finditer(text))


def document(settings: Settings, with_secrets: bool) -> dict[str, Any]:
    """Every setting's value as the server reads it (environment, file, defaults), plugins' too."""
    known = secret_names(settings)

    def dump(model: BaseModel, key: Any) -> dict[str, Any]:
        plain = model.model_dump(mode="json")  # paths, nested models ... as JSON (secrets masked)
        out: dict[str, Any] = {}
        for field in type(model).model_fields:
            name, value = key(field), plain[field]
            raw = getattr(model, field)
            if isinstance(raw, SecretStr):
                value = raw.get_secret_value()
            if not with_secrets and value not in ("", None) and is_secret(name, known):
                value = REDACTED
            elif not with_secrets and isinstance(value, str):
                value = without_password(value)
            out[name] = value
        return out

    result = dump(settings, lambda field: field)
    for plugin in _plugin_settings(settings):
        result |= dump(plugin, plugin.key)
    return result


def config_text(path: Path, settings: Settings, with_secrets: bool) -> str | None:
    """The configuration file's text (None: there is none); without secrets, each secret's line is turned
    into a comment and URL passwords are replaced. A file this cannot clean with certainty (a secret
    still readable after cleaning) is left out: None."""
    if not path.is_file():
        return None
    text = path.read_text()
    if with_secrets:
        return text
    known = secret_names(settings)
    lines = []
    for line in text.splitlines(keepends=True):
        found = re.match(r"\s*([A-Za-z0-9_.-]+)\s*=", line)
        if found and is_secret(found.group(1), known):
            lines.append(f"# {found.group(1)} = {REDACTED}\n")
        else:
            lines.append(without_password(line))
    cleaned = "".join(lines)
    try:
        parsed = tomllib.loads(cleaned)
    except tomllib.TOMLDecodeError:
        return None  # e.g. a secret in a multi-line string: the rest of it would be left behind
    if _leaks(parsed, known):
        return None
    return cleaned


def _leaks(value: Any, known: set[str], name: str = "") -> bool:
    if isinstance(value, dict):
        return any(_leaks(v, known, k) for k, v in value.items())
    if isinstance(value, list):
        return any(_leaks(v, known, name) for v in value)
    if isinstance(value, str):
        return (bool(value) and is_secret(name, known)) or has_url_password(value)
    return False
