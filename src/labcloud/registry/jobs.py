"""What a job submission is checked against, and how an entrypoint becomes argv and environment.

Nothing here runs a shell: placeholders are substituted inside each argv item separately.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError

from labcloud.errors import InvalidInput
from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.spec_parts import Resources
from labcloud.registry.template import Placeholder, parse_template, render_value

Loc = list[str | int]
MAX_MESSAGE_CHARS = 300  # jsonschema quotes the whole instance; a 10 MB list must not end up in a reply
PYTHON_WORDS = ("python", "python3")


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _loc_text(loc: Loc) -> str:
    return ".".join(str(p) for p in loc[2:]) or str(loc[-1])


def _raise_if_any(errors: list[dict[str, Any]], what: str) -> None:
    if errors:
        listing = "; ".join(f"{_loc_text(e['loc'])}: {e['msg']}" for e in errors)
        raise InvalidInput(f"Invalid {what}: {listing}", errors=errors)


def _schema_errors(error: SchemaValidationError, reported: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """One jsonschema error as ``{loc, msg}`` items; ``required`` and ``additionalProperties`` errors
    are split so that each missing or unexpected property gets its own location."""
    path: Loc = ["body", "params", *error.absolute_path]
    top = len(path) == 2
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        # jsonschema yields one error per missing name, in the order of the `required` list.
        required = error.validator_value if isinstance(error.validator_value, list) else []
        for name in required:
            if name not in instance and (*path, name) not in reported:
                reported.add((*path, name))
                what = "parameter" if top else "property"
                return [{"loc": [*path, name], "msg": f"missing required {what} {name!r}"}]
        return []
    if (
        error.validator == "additionalProperties"
        and error.validator_value is False
        and isinstance(instance, dict)
    ):
        schema = error.schema if isinstance(error.schema, dict) else {}
        declared = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [k for k in instance if k not in declared and not any(re.search(p, k) for p in patterns)]
        known = ", ".join(declared) or "none"
        what = "parameter" if top else "property"
        return [{"loc": [*path, k], "msg": f"unknown {what} {k!r}; {what}s: {known}"} for k in extras]
    return [{"loc": path, "msg": _short(words(error))}]


KINDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "array": "a list",
    "object": "a set of named values",
    "null": "empty",
}


def _amount(value: Any, unit: str) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def words(error: SchemaValidationError) -> str:
    """A schema error as a scientist would say it: in the units the parameter declares (its ``unit``),
    without regular expressions or Python's type names."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    unit = str(schema.get("unit", ""))
    rule, value = error.validator, error.validator_value
    if rule == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(KINDS.get(str(k), str(k)) for k in kinds)
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        says = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[str(rule)]
        return f"must be {says} {_amount(value, unit)}"
    if rule == "multipleOf":
        return f"must be a multiple of {_amount(value, unit)}"
    if rule in ("minLength", "maxLength"):
        return f"must have {'at least' if rule == 'minLength' else 'at most'} {value} characters"
    if rule in ("minItems", "maxItems"):
        return f"must have {'at least' if rule == 'minItems' else 'at most'} {value} items"
    if rule == "enum" and isinstance(value, list):
        return "must be one of: " + ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    if rule == "const":
        return f"must be {json.dumps(value)}"
    if rule == "pattern":  # the expression means nothing to most people: its description and examples do
        hint = schema.get("patternDescription")
        examples = schema.get("examples")
        example = f" (for example {examples[0]})" if isinstance(examples, list) and examples else ""
        return f"is not in the expected form{': ' + str(hint) if hint else ''}{example}"
    if rule == "format":
        return f"must be a valid {value}"
    if rule == "uniqueItems":
        return "must not repeat an item"
    return error.message


def validate_params(entrypoint: EntrypointSpec, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``params`` against the entrypoint's JSON Schema and fill in top-level defaults.

    Raises :class:`InvalidInput` listing every failing field (``loc`` = ``["body", "params", ...]``).
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InvalidInput.field(["body", "params"], "params must be an object of parameter values")
    merged: dict[str, Any] = dict(params)
    for name, default in entrypoint.parameter_defaults().items():
        if name not in merged:
            merged[name] = copy.deepcopy(default)  # the spec is shared; a job must not alter its defaults
    schema = entrypoint.parameters
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors: list[dict[str, Any]] = []
    reported: set[tuple[Any, ...]] = set()
    for error in validator.iter_errors(merged):
        errors.extend(_schema_errors(error, reported))
    # Report in the order of the form (the schema's properties), unknown names last.
    order = {name: i for i, name in enumerate(schema.get("properties", {}))}
    errors.sort(
        key=lambda e: (order.get(e["loc"][2], len(order)) if len(e["loc"]) > 2 else -1, str(e["loc"]))
    )
    _raise_if_any(errors, "parameters")
    # JSON Schema counts 3.0 as an integer; a tool parsing `--times 3.0` with int() would not.
    for name, prop in schema.get("properties", {}).items():
        value = merged.get(name)
        if isinstance(prop, dict) and prop.get("type") == "integer" and isinstance(value, float):
            merged[name] = int(value)
    return merged


def validate_inputs(entrypoint: EntrypointSpec, inputs: Mapping[str, Any] | None) -> dict[str, str]:
    """Check input slot names and that every required slot is given; returns the given slots in the
    declared order. Whether the files exist is checked where the files are."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise InvalidInput.field(["body", "inputs"], "inputs must be an object mapping input names to paths")
    declared = entrypoint.inputs
    errors: list[dict[str, Any]] = []
    for slot, value in inputs.items():
        if slot not in declared:
            errors.append(
                {
                    "loc": ["body", "inputs", slot],
                    "msg": f"unknown input {slot!r}; inputs: {', '.join(declared) or 'none'}",
                }
            )
        elif not isinstance(value, str) or not value.strip():
            errors.append(
                {
                    "loc": ["body", "inputs", slot],
                    "msg": f"the {declared[slot].type} path must be a non-empty string",
                }
            )
    for slot, spec in declared.items():
        if spec.required and slot not in inputs:
            errors.append(
                {"loc": ["body", "inputs", slot], "msg": f"missing required input {slot!r} ({spec.type})"}
            )
    _raise_if_any(errors, "inputs")
    return {slot: inputs[slot] for slot in declared if slot in inputs}


def _checked(value: str, loc: Loc) -> str:
    if "\x00" in value:  # neither argv nor the environment can carry a NUL byte
        raise InvalidInput.field(loc, "the value must not contain a NUL character")
    return value


def _substitute(
    entrypoint: EntrypointSpec,
    ph: Placeholder,
    params: Mapping[str, Any],
    input_paths: Mapping[str, str],
    output_dir: str,
    resources: Resources | None = None,
) -> str:
    if ph.kind == "output":
        return output_dir
    assert ph.name is not None
    if ph.kind == "resources":
        value = float(getattr(resources or entrypoint.resources, ph.name))
        return f"{value:g}" if not value.is_integer() else str(int(value))
    if ph.kind == "params":
        if ph.name not in params:
            raise InvalidInput.field(
                ["body", "params", ph.name], f"no value for parameter {ph.name!r}, which the command uses"
            )
        return _checked(render_value(params[ph.name]), ["body", "params", ph.name])
    if ph.name in input_paths:
        return _checked(input_paths[ph.name], ["body", "inputs", ph.name])
    if entrypoint.inputs[ph.name].required:
        raise InvalidInput.field(["body", "inputs", ph.name], f"missing required input {ph.name!r}")
    return ""  # an optional input that was not given


def render_text(
    entrypoint: EntrypointSpec,
    text: str,
    params: Mapping[str, Any],
    input_paths: Mapping[str, str],
    output_dir: str,
    resources: Resources | None = None,
) -> str:
    """One template (a command item, a container variable) with its placeholders substituted;
    ``resources``: what the job was given (else the entrypoint's own)."""
    return "".join(
        seg
        if isinstance(seg, str)
        else _substitute(entrypoint, seg, params, input_paths, output_dir, resources)
        for seg in parse_template(text)
    )


def render_command(
    entrypoint: EntrypointSpec,
    params: Mapping[str, Any],
    input_paths: Mapping[str, str],
    output_dir: str,
    python: str | None = sys.executable,
    resources: Resources | None = None,
) -> list[str]:
    """The argv of a job: placeholders substituted in each item; a leading ``python``/``python3`` becomes
    ``python`` (by default the server's own interpreter, where labcloud and its demo apps are installed;
    None keeps it, as in a container image)."""
    argv = [
        render_text(entrypoint, arg, params, input_paths, output_dir, resources) for arg in entrypoint.command
    ]
    if python and entrypoint.command[0] in PYTHON_WORDS:
        argv[0] = python
    return argv


def job_environment(
    entrypoint: EntrypointSpec,
    params: Mapping[str, Any],
    input_paths: Mapping[str, str],
    output_dir: str,
    user_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables labcloud sets for a job (to add to a clean base environment).

    ``LABCLOUD_OUTPUT``, ``LABCLOUD_INPUT_<SLOT>`` for each given input, ``LABCLOUD_PARAM_<NAME>`` for each
    parameter (rendered as in the command), ``LABCLOUD_PARAMS_JSON``, and the user's variables whose names
    the entrypoint allows in ``env``.
    """
    user_env = user_env or {}
    errors: list[dict[str, Any]] = []
    allowed = set(entrypoint.env)
    for name, value in user_env.items():
        if name not in allowed:
            allowed_text = ", ".join(entrypoint.env) or "none"
            errors.append(
                {
                    "loc": ["body", "env", name],
                    "msg": f"{name!r} may not be set for this app; allowed: {allowed_text}",
                }
            )
        elif not isinstance(value, str) or "\x00" in value:
            errors.append(
                {"loc": ["body", "env", name], "msg": "the value must be a string without NUL characters"}
            )
    _raise_if_any(errors, "environment")

    env: dict[str, str] = dict(user_env)
    env["LABCLOUD_OUTPUT"] = output_dir
    for slot, path in input_paths.items():
        env[f"LABCLOUD_INPUT_{slot.upper()}"] = _checked(path, ["body", "inputs", slot])
    for name, value in params.items():
        env[f"LABCLOUD_PARAM_{name.upper()}"] = _checked(render_value(value), ["body", "params", name])
    env["LABCLOUD_PARAMS_JSON"] = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
    return env
