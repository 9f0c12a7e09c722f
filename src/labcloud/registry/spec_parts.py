"""The parts of the app YAML format that every level shares: names and patterns, the base model, and the
small specs an entrypoint is made of (resources, an input, container options). Checks raise
:class:`SpecError` with the sub-path of the offending key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

APP_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ENTRYPOINT_NAME_PATTERN = APP_NAME_PATTERN
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Parameter and input names become environment variable suffixes (LABCLOUD_PARAM_<NAME>), so they
# must be identifiers.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIX = "LABCLOUD_"
JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
DEFAULT_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class SpecError(ValueError):
    """A load-time check failed; ``subloc`` is the path below the model that raised it."""

    def __init__(self, message: str, subloc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.subloc = subloc


def check_variable_names(
    names: Iterable[str], loc: tuple[str, ...], what: str, variable: str, clash: str
) -> None:
    """Names that also name an environment variable (``variable``): each an identifier, and no two that
    differ only in case. ``what`` and ``clash`` are the messages, formatted with ``name`` (and ``first``,
    ``upper``); the error points at ``(*loc, name)``."""
    seen: dict[str, str] = {}
    for name in names:
        if not IDENTIFIER_PATTERN.match(name):
            raise SpecError(
                what.format(name=name) + " must be an identifier (letters, digits, _), "
                f"because it also names the environment variable {variable}",
                (*loc, name),
            )
        if name.upper() in seen:
            raise SpecError(
                clash.format(first=seen[name.upper()], name=name, upper=name.upper()), (*loc, name)
            )
        seen[name.upper()] = name


class SpecModel(BaseModel):
    # Unknown keys are errors so that a typo ("comand") is reported instead of silently ignored;
    # frozen because the registry hands the same objects to many threads.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(SpecModel):
    """What one job of an entrypoint may use."""

    cpus: float = Field(default=1.0, gt=0)
    memory_mb: int = Field(default=512, gt=0)
    gpus: int = Field(default=0, ge=0)
    timeout_s: int = Field(default=3600, gt=0)

    def needs(self) -> dict[str, float]:
        """What the job takes from a machine's capacity while it runs (cpus, memory_mb, gpus)."""
        return {"cpus": float(self.cpus), "memory_mb": float(self.memory_mb), "gpus": float(self.gpus)}

    def fits_in(self, free: Mapping[str, float]) -> bool:
        """Whether it fits in ``free`` capacity (cpus, memory_mb, gpus; a missing one counts as none)."""
        return all(need <= float(free.get(key) or 0) + 1e-9 for key, need in self.needs().items())

    @model_validator(mode="before")
    @classmethod
    def _no_booleans(cls, data: Any) -> Any:
        # Pydantic would read YAML's `yes`/`true` as 1; that is never what an author meant here.
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, bool):
                    raise SpecError(f"{key} must be a number, not {str(value).lower()}", (key,))
        return data


class InputSpec(SpecModel):
    """A named input slot: a file or folder from the user's space, staged before the job runs."""

    type: Literal["file", "folder"] = "file"
    required: bool = True
    description: str = ""
    # The file endings it takes (".csv", ".ome.tif"), any case; empty: any file. Pickers offer only those.
    accept: tuple[str, ...] = ()

    @field_validator("accept")
    @classmethod
    def _endings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in value if not re.fullmatch(r"\.[A-Za-z0-9_.+-]{1,30}", e)]
        if bad:
            raise ValueError(f"accept takes file endings such as .csv, not {', '.join(map(repr, bad))}")
        return tuple(e.lower() for e in value)

    def takes(self, name: str) -> bool:
        """Whether a file of this name fits the slot's endings."""
        return not self.accept or name.lower().endswith(self.accept)

    def expects(self) -> str:
        """What the slot takes, in words: "a file (.csv or .npy)"."""
        endings = " or ".join(self.accept)
        return f"a {self.type}" + (f" ({endings})" if endings else "")


# An image reference as a registry knows it: [host[:port]/]path[:tag][@sha256:hex], or a local image id
# (sha256:hex). Nothing that starts with "-" or holds a space can pass, so it never reads as an engine flag.
IMAGE_PATTERN = re.compile(
    r"^(sha256:[0-9a-f]{64}"
    r"|[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?)$"
)
CONTAINER_USER_PATTERN = re.compile(r"^[0-9]{1,9}(:[0-9]{1,9})?$")


def check_env_name(name: str, loc: str | int) -> None:
    """A variable an app may name: well formed, and not one of labcloud's own."""
    if not ENV_NAME_PATTERN.match(name):
        raise SpecError(f"environment variable name {name!r} must match {ENV_NAME_PATTERN.pattern}", (loc,))
    if name.startswith(RESERVED_ENV_PREFIX):
        raise SpecError(f"{name!r}: names starting with {RESERVED_ENV_PREFIX} are set by labcloud", (loc,))


class ContainerOptions(SpecModel):
    """How a container entrypoint's image is started (``runtime: container``)."""

    # The folder the command starts in, inside the container (the image's own when empty).
    workdir: str = Field("", max_length=255)
    # uid[:gid], numbers only (names mean nothing outside the image); never root.
    user: str = "65534:65534"
    # Variables for the container; values may use {params.NAME}, {inputs.SLOT} and {output}.
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and (not value.startswith("/") or ".." in value.split("/") or "\x00" in value):
            raise SpecError("workdir must be an absolute path inside the container, without '..'")
        return value

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: Any) -> Any:
        text = str(value)
        if not CONTAINER_USER_PATTERN.match(text):
            raise SpecError("user must be numeric, uid or uid:gid (e.g. '1000:1000')")
        uid, _, gid = text.partition(":")
        if int(uid) == 0 or (gid and int(gid) == 0):
            raise SpecError("containers never run as root (uid or gid 0)")
        return text

    @field_validator("env")
    @classmethod
    def _names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            check_env_name(name, name)
        return env

    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


class RetentionSpec(SpecModel):
    """An app's ``retention:`` block: each key given replaces the installation's setting of the same name
    (``retention_<key>``) for this app's jobs; a key left out keeps it. Days count from when a job ended; 0
    keeps for ever."""

    folders_days: float | None = Field(default=None, ge=0, le=36500)
    outputs_days: float | None = Field(default=None, ge=0, le=36500)
    jobs_days: float | None = Field(default=None, ge=0, le=36500)
    keep_last: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # YAML's `yes`/`true` would be read as 1 day; each key refuses it on its own (all named at once).
        if isinstance(value, bool):
            raise ValueError(f"must be a number of days or jobs, not {str(value).lower()}")
        return value
