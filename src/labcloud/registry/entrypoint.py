"""One runnable command of an app version (:class:`EntrypointSpec`): its command template, parameter
schema, inputs, outputs, environment, resources and where it runs, with every check the file allows."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator, model_validator

from labcloud.registry.spec_parts import (
    DEFAULT_PARAMETERS,
    IMAGE_PATTERN,
    JSON_TYPES,
    ContainerOptions,
    InputSpec,
    Resources,
    SpecError,
    SpecModel,
    check_env_name,
    check_variable_names,
)
from labcloud.registry.template import Placeholder, TemplateError, parse_template


class EntrypointSpec(SpecModel):
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
        check_json_data(schema, ())
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
        check_variable_names(
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
        check_variable_names(
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
            check_env_name(name, i)
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


def check_json_data(value: Any, loc: tuple[str | int, ...]) -> None:
    """Reject what YAML can express but JSON cannot (dates, non-string keys, NaN): the schema is served
    as JSON and stored with every job."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(f"key {key!r} must be a string (quote it in YAML)", loc)
            check_json_data(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_data(item, (*loc, index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{value!r} is not a JSON number", loc)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise SpecError(f"{value!r} is a YAML {type(value).__name__}, not JSON data; quote it", loc)


@functools.lru_cache(maxsize=256)
def _stored(text: str) -> EntrypointSpec:
    return EntrypointSpec.model_validate(json.loads(text))


def stored_entrypoint(spec: dict[str, Any]) -> EntrypointSpec:
    """The entrypoint a job stored (its snapshot of the spec), checked once per distinct spec: every job of
    a sweep would otherwise check the same parameter schema again. The result is shared: never change it."""
    return _stored(json.dumps(spec, sort_keys=True))
