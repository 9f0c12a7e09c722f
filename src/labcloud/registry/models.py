"""The app YAML format as Pydantic models, with every check that can be made when the file loads.

Checks that belong to a part of the file raise :class:`SpecError` carrying the sub-path of the offending
key, so that the loader can point at the exact YAML line rather than at the enclosing entrypoint. This module
is an app and its versions; an entrypoint is :mod:`labcloud.registry.entrypoint`, the parts they share
:mod:`labcloud.registry.spec_parts`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.spec_parts import (
    APP_NAME_PATTERN,
    ENTRYPOINT_NAME_PATTERN,
    VERSION_PATTERN,
    RetentionSpec,
    SpecError,
    SpecModel,
)


class VersionSpec(SpecModel):
    """One published version of an app: its entrypoints."""

    entrypoints: dict[str, EntrypointSpec] = Field(min_length=1)
    default_entrypoint: str | None = None

    @field_validator("entrypoints")
    @classmethod
    def _check_names(cls, entrypoints: dict[str, EntrypointSpec]) -> dict[str, EntrypointSpec]:
        for name in entrypoints:
            if not re.match(ENTRYPOINT_NAME_PATTERN, name):
                raise SpecError(f"entrypoint name {name!r} must match {ENTRYPOINT_NAME_PATTERN}", (name,))
        return entrypoints

    @model_validator(mode="after")
    def _check_default(self) -> VersionSpec:
        if self.default_entrypoint is not None and self.default_entrypoint not in self.entrypoints:
            raise SpecError(
                f"default_entrypoint {self.default_entrypoint!r} is not one of the entrypoints: "
                + ", ".join(self.entrypoints),
                ("default_entrypoint",),
            )
        return self

    def default_entrypoint_name(self) -> str | None:
        """``default_entrypoint`` if set, else the only entrypoint, else ``None`` (the caller must choose)."""
        if self.default_entrypoint is not None:
            return self.default_entrypoint
        if len(self.entrypoints) == 1:
            return next(iter(self.entrypoints))
        return None


class AppSpec(SpecModel):
    """One app file: a named tool with its versions."""

    name: str = Field(pattern=APP_NAME_PATTERN)
    title: str = ""
    description: str = ""
    versions: dict[str, VersionSpec] = Field(min_length=1)
    # How long this app's ended jobs keep their folders, outputs and themselves (over the installation's).
    retention: RetentionSpec | None = None

    @field_validator("versions", mode="before")
    @classmethod
    def _check_version_keys(cls, versions: Any) -> Any:
        if isinstance(versions, dict):
            for key in versions:
                if not isinstance(key, str):
                    # Unquoted `1.10:` is the float 1.1 in YAML: insist on quotes rather than guess.
                    raise SpecError(
                        f'version {key!r} must be a quoted string in YAML (write "{key}": ...); '
                        "unquoted, 1.10 would be read as the number 1.1",
                        (str(key),),
                    )
                if not VERSION_PATTERN.match(key):
                    raise SpecError(f"version {key!r} must match {VERSION_PATTERN.pattern}", (key,))
        return versions

    @model_validator(mode="before")
    @classmethod
    def _default_title(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("title") and isinstance(data.get("name"), str):
            return {**data, "title": data["name"]}
        return data

    def sorted_versions(self) -> list[str]:
        """Version names, newest first."""
        return sorted(self.versions, key=version_key, reverse=True)

    @property
    def latest_version(self) -> str:
        """The highest version by natural sort ("1.10" > "1.9")."""
        return max(self.versions, key=version_key)


_VERSION_TOKEN = re.compile(r"\d+|[^\W\d_]+", re.ASCII)


def version_key(version: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key for version strings: numeric parts compare as numbers, other parts as (lower-case)
    strings that sort after any number at the same position; separators are ignored. The raw string
    breaks ties so the order is total ("1.0" vs "1.00")."""
    parts = tuple(
        (0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in _VERSION_TOKEN.findall(version)
    )
    return parts, version
