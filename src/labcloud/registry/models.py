"""The app YAML format as Pydantic models, with every check that can be made when the file loads.

Checks that belong to a part of the file raise :class:`SpecError` carrying the sub-path of the offending
key, so that the loader can point at the exact YAML line rather than at the enclosing entrypoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labcloud.registry.template import Placeholder, TemplateError, parse_template

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


def _check_variable_names(
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


class _Model(BaseModel):
    # Unknown keys are errors so that a typo ("comand") is reported instead of silently ignored;
    # frozen because the registry hands the same objects to many threads.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
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


class InputSpec(_Model):
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


def _check_env_name(name: str, loc: str | int) -> None:
    """A variable an app may name: well formed, and not one of labcloud's own."""
    if not ENV_NAME_PATTERN.match(name):
        raise SpecError(f"environment variable name {name!r} must match {ENV_NAME_PATTERN.pattern}", (loc,))
    if name.startswith(RESERVED_ENV_PREFIX):
        raise SpecError(f"{name!r}: names starting with {RESERVED_ENV_PREFIX} are set by labcloud", (loc,))


class ContainerOptions(_Model):
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
            _check_env_name(name, name)
        return env

    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


class EntrypointSpec(_Model):
    """One runnable command of an app version."""

    description: str = ""
    runtime: Literal["process", "container"] = "process"
    image: str | None = Field(None, max_length=255)  # runtime: container only
    container: ContainerOptions | None = None
    command: list[str] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: json.loads(json.dumps(DEFAULT_PARAMETERS)))
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    network: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    # Where its jobs run, over the installation's default and routes: an executor, and its queue/partition.
    executor: str | None = Field(None, max_length=32)
    queue: str | None = Field(None, max_length=100)

    @field_validator("runtime", mode="before")
    @classmethod
    def _known_runtime(cls, value: Any) -> Any:
        if value not in ("process", "container"):
            raise SpecError(f"unknown runtime {value!r}; use 'process' or 'container'")
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_PATTERN.match(value):
            raise SpecError(
                f"image {value!r} is not an image reference (e.g. registry.example.org/lab/tool:1.2, "
                "lab/tool@sha256:<64 hex>, sha256:<64 hex>)"
            )
        return value

    @model_validator(mode="after")
    def _check_container(self) -> EntrypointSpec:
        if self.runtime == "container" and self.image is None:
            raise SpecError("a container entrypoint needs an image (image: REPOSITORY:TAG or @sha256:...)")
        if self.runtime == "process" and self.image is not None:
            raise SpecError("image is for runtime: container", ("image",))
        if self.runtime == "process" and self.container is not None:
            raise SpecError("container options are for runtime: container", ("container",))
        for name, value in (self.container.env if self.container else {}).items():
            try:
                used = [seg for seg in parse_template(value) if isinstance(seg, Placeholder)]
            except TemplateError as exc:
                raise SpecError(str(exc), ("container", "env", name)) from None
            for ph in used:
                required = set(self.parameters.get("required", []))
                problem = self._placeholder_problem(ph, self.parameters.get("properties", {}), required)
                if problem:
                    raise SpecError(f"{name}: {problem}", ("container", "env", name))
        return self

    @field_validator("command", mode="before")
    @classmethod
    def _numbers_as_strings(cls, value: Any) -> Any:
        # `[sleep, 5]` is natural YAML; argv items are strings, so accept plain numbers as written.
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, schema: dict[str, Any]) -> dict[str, Any]:
        _check_json_data(schema, ())
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            message = exc.message
            if list(exc.path)[-1:] == ["type"]:
                # jsonschema's own message ("... is not valid under any of the given schemas") hides this.
                message = f"{exc.instance!r} is not a JSON Schema type; use one of: {', '.join(JSON_TYPES)}"
            raise SpecError(f"not a valid JSON Schema: {message}", tuple(exc.path)) from None
        if schema.get("type") != "object":
            raise SpecError(
                "the parameters schema must have type: object", ("type",) if "type" in schema else ()
            )
        properties = schema.get("properties", {})
        _check_variable_names(
            properties,
            ("properties",),
            "parameter name {name!r}",
            "LABCLOUD_PARAM_<NAME>",
            "parameters {first!r} and {name!r} differ only in case, so both would set LABCLOUD_PARAM_{upper}",
        )
        for name in schema.get("required", []):
            if name not in properties:
                raise SpecError(f"required parameter {name!r} is not declared in properties", ("required",))
        # Validate each default in the context of the whole schema, so that "$ref": "#/$defs/..." in a
        # property resolves; errors about the other (absent) properties are ignored.
        validator = Draft202012Validator(schema)
        for name, prop in properties.items():
            if not isinstance(prop, dict) or "default" not in prop:
                continue
            for error in validator.iter_errors({name: prop["default"]}):
                if list(error.absolute_path)[:1] == [name]:
                    raise SpecError(
                        f"default {prop['default']!r} of parameter {name!r} does not match its schema: "
                        f"{error.message}",
                        ("properties", name, "default"),
                    )
        return schema

    @field_validator("inputs")
    @classmethod
    def _check_input_names(cls, inputs: dict[str, InputSpec]) -> dict[str, InputSpec]:
        _check_variable_names(
            inputs,
            (),
            "input slot name {name!r}",
            "LABCLOUD_INPUT_<SLOT>",
            "input slots {first!r} and {name!r} differ only in case",
        )
        return inputs

    @field_validator("outputs")
    @classmethod
    def _check_outputs(cls, outputs: list[str]) -> list[str]:
        for i, out in enumerate(outputs):
            parts = out.replace("\\", "/").split("/")
            if not out.strip() or out.startswith("/") or ".." in parts:
                raise SpecError(f"output {out!r} must be a non-empty path inside the output folder", (i,))
        return outputs

    @field_validator("env")
    @classmethod
    def _check_env(cls, names: list[str]) -> list[str]:
        for i, name in enumerate(names):
            _check_env_name(name, i)
            if name in names[:i]:
                raise SpecError(f"environment variable {name!r} is listed twice", (i,))
        return names

    @model_validator(mode="after")
    def _check_command(self) -> EntrypointSpec:
        properties: dict[str, Any] = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        for i, arg in enumerate(self.command):
            try:
                used = [seg for seg in parse_template(arg) if isinstance(seg, Placeholder)]
            except TemplateError as exc:
                raise SpecError(str(exc), ("command", i)) from None
            if i == 0 and used:
                raise SpecError(
                    "the program (first command item) must be fixed, not a placeholder", ("command", 0)
                )
            for ph in used:
                problem = self._placeholder_problem(ph, properties, required)
                if problem:
                    raise SpecError(f"command item {arg!r}: {problem}", ("command", i))
        return self

    def _placeholder_problem(self, ph: Placeholder, properties: dict[str, Any], required: set[str]) -> str:
        if ph.kind == "params":
            assert ph.name is not None
            if ph.name not in properties:
                known = ", ".join(properties) or "none"
                return f"{ph} names no declared parameter (parameters: {known})"
            prop = properties[ph.name]
            if ph.name not in required and not (isinstance(prop, dict) and "default" in prop):
                return (
                    f"parameter {ph.name!r} is used in the command but is neither required nor has a default"
                )
        elif ph.kind == "inputs" and ph.name not in self.inputs:
            return f"{ph} names no declared input (inputs: {', '.join(self.inputs) or 'none'})"
        return ""

    def canonical_dict(self) -> dict[str, Any]:
        """The spec as plain JSON data, defaults filled in: what a job stores for provenance."""
        unset = {name for name in ("executor", "queue", "image", "container") if getattr(self, name) is None}
        return self.model_dump(mode="json", exclude=unset)  # hashes of specs without them stay as they were

    def canonical_json(self) -> str:
        """Compact JSON of :meth:`canonical_dict` with sorted keys: stable across key order in the YAML."""
        return json.dumps(self.canonical_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def spec_hash(self) -> str:
        """sha256 hex of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def parameter_defaults(self) -> dict[str, Any]:
        """Defaults of the top-level parameters that declare one."""
        properties: dict[str, Any] = self.parameters.get("properties", {})
        return {k: v["default"] for k, v in properties.items() if isinstance(v, dict) and "default" in v}


def _check_json_data(value: Any, loc: tuple[str | int, ...]) -> None:
    """Reject what YAML can express but JSON cannot (dates, non-string keys, NaN): the schema is served
    as JSON and stored with every job."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(f"key {key!r} must be a string (quote it in YAML)", loc)
            _check_json_data(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_data(item, (*loc, index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{value!r} is not a JSON number", loc)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise SpecError(f"{value!r} is a YAML {type(value).__name__}, not JSON data; quote it", loc)


class VersionSpec(_Model):
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


class AppSpec(_Model):
    """One app file: a named tool with its versions."""

    name: str = Field(pattern=APP_NAME_PATTERN)
    title: str = ""
    description: str = ""
    versions: dict[str, VersionSpec] = Field(min_length=1)

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
