"""The run form of an entrypoint, generated from its JSON Schema, and the form's answers as a submission.

The form only shapes input: strings become numbers, booleans or JSON where the schema says so. Whether the
values are acceptable is decided by the jobs service (the schema, the input files, the resource limits);
its errors come back with a ``loc`` that names the field they belong next to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from labcloud.registry import EntrypointSpec
from labcloud.services.job_checks import RESOURCE_LIMITS
from labcloud.services.jobs import Submission

PARAM_PREFIX = "params."
INPUT_PREFIX = "inputs."
RESOURCE_PREFIX = "resources."
BOOLEAN_MARKER = "booleans"  # names the checkbox fields, so that an unticked box means false


@dataclass
class Field:
    """One form control."""

    name: str  # the form field's name, e.g. "params.threshold"
    key: str  # the parameter, input slot or resource it sets
    label: str
    widget: str  # number | text | select | checkbox | json | file
    help: str = ""
    value: Any = None
    required: bool = False
    options: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)  # min, max, step, minlength, maxlength
    error: str = ""


@dataclass
class RunForm:
    params: list[Field]
    inputs: list[Field]
    resources: list[Field]
    name: str = ""
    tags: str = ""
    tags_error: str = ""
    errors: list[str] = field(default_factory=list)  # those that belong to no field
    # What the form itself found wrong ({loc, msg}), checked again with everything else by the service.
    problems: list[dict[str, Any]] = field(default_factory=list)
    # The project chooser: (slug, name) of each project the user may run jobs in, personal first.
    projects: list[tuple[str, str]] = field(default_factory=list)
    project: str = ""  # the chosen slug
    project_error: str = ""
    # "Run on devices": the devices one may choose (name, where, state), those chosen and their own answers.
    devices: list[tuple[str, str, str]] = field(default_factory=list)
    chosen_devices: list[str] = field(default_factory=list)
    device_params: dict[str, str] = field(default_factory=dict)
    device_errors: dict[str, str] = field(default_factory=dict)


def _label(key: str, schema: dict[str, Any]) -> str:
    """The schema's title (else the name, as words) and its unit: "Low cut-off (Hz)"."""
    title = str(schema.get("title") or "") or key.replace("_", " ").capitalize()
    unit = str(schema.get("unit") or "")
    return f"{title} ({unit})" if unit else title


def param_field(key: str, schema: dict[str, Any], required: bool) -> Field:
    kind = schema.get("type")
    default = schema.get("default")
    f = Field(
        name=PARAM_PREFIX + key,
        key=key,
        label=_label(key, schema),
        widget="text",
        help=str(schema.get("description", "")),
        value=default,
        required=required and "default" not in schema,
    )
    if "enum" in schema:
        f.widget = "select"
        f.options = [o if isinstance(o, str) else json.dumps(o) for o in schema["enum"]]
        if isinstance(default, bool | int | float) or default is None:
            f.value = json.dumps(default) if default is not None and not isinstance(default, str) else default
    elif kind == "boolean":
        f.widget = "checkbox"
        f.value = bool(default)
    elif kind in ("integer", "number"):
        f.widget = "number"
        f.attrs["step"] = "1" if kind == "integer" else "any"
        for src, dst in (("minimum", "min"), ("maximum", "max")):
            if src in schema:
                f.attrs[dst] = schema[src]
    elif kind == "string":
        for src, dst in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if src in schema:
                f.attrs[dst] = schema[src]
        # Not an HTML pattern: JSON Schema patterns search, HTML ones must match the whole value.
    else:  # arrays, objects, unions: JSON text
        f.widget = "json"
        f.value = json.dumps(default) if default is not None else ""
        f.help = (f.help + " " if f.help else "") + "(JSON)"
    return f


def build(
    spec: EntrypointSpec,
    file_choices: dict[str, list[str]],
    ceiling: dict[str, float] | None,
    projects: list[tuple[str, str]] | None = None,
) -> RunForm:
    """The empty form for ``spec``. ``file_choices``: paths offered per input type ("file", "folder");
    ``projects``: (slug, name) of the projects offered, the first one chosen."""
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    required = set(spec.parameters.get("required", []))
    params = [param_field(k, v if isinstance(v, dict) else {}, k in required) for k, v in properties.items()]
    inputs = [
        Field(
            name=INPUT_PREFIX + slot,
            key=slot,
            label=slot.replace("_", " ").capitalize(),
            widget="file",
            help=s.description,
            required=s.required,
            options=[p for p in file_choices.get(s.type, []) if s.type == "folder" or s.takes(p)],
            attrs={"type": s.type, "accept": ",".join(s.accept), "expects": s.expects()},
        )
        for slot, s in spec.inputs.items()
    ]
    defaults = spec.resources.model_dump()
    resources = []
    for key, (low, high) in RESOURCE_LIMITS.items():
        top = min(high, (ceiling or {}).get(key, high))
        resources.append(
            Field(
                name=RESOURCE_PREFIX + key,
                key=key,
                label={
                    "cpus": "CPUs",
                    "memory_mb": "Memory (MB)",
                    "gpus": "GPUs",
                    "timeout_s": "Time limit (s)",
                }[key],
                widget="number",
                value=defaults.get(key),
                attrs={
                    "min": low if key != "gpus" else 0,
                    "max": int(top) if float(top).is_integer() else top,
                    "step": "any" if key == "cpus" else "1",
                },
            )
        )
    offered = list(projects or [])
    return RunForm(params, inputs, resources, projects=offered, project=offered[0][0] if offered else "")


def _shown(f: Field, value: Any) -> Any:
    """A value as its control shows it (what :func:`read` turns back into the same value)."""
    if f.widget == "checkbox":
        return bool(value)
    if f.widget == "json" or (f.widget == "select" and not isinstance(value, str)):
        return json.dumps(value)
    return value


def prefill(
    form: RunForm,
    params: dict[str, Any],
    inputs: dict[str, str],
    resources: dict[str, Any],
    name: str,
    tags: dict[str, str],
    project: str,
) -> None:
    """Fill the form with an earlier job's answers (edit and run again)."""
    for f in form.params:
        if f.key in params:
            f.value = _shown(f, params[f.key])
    for f in form.inputs:
        f.value = inputs.get(f.key, "")
    for f in form.resources:
        if resources.get(f.key) is not None:
            f.value = resources[f.key]
    form.name = name
    form.tags = ", ".join(f"{k}={v}" for k, v in tags.items())
    if project:
        form.project = project


def _number(raw: str, integer: bool) -> Any:
    try:
        value = float(raw)
    except ValueError:
        return raw  # the schema check says what is wrong with it
    if integer or (value.is_integer() and "." not in raw and "e" not in raw.lower()):
        return int(value) if value.is_integer() else value
    return value


def _param_value(f: Field, schema: dict[str, Any], raw: str) -> Any:
    if "enum" in schema:
        for option in schema["enum"]:
            if (option if isinstance(option, str) else json.dumps(option)) == raw:
                return option
        return raw
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return _number(raw, kind == "integer")
    if f.widget == "json":
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def read(form: RunForm, spec: EntrypointSpec, data: FormData) -> Submission:
    """The submission the answered form asks for; also puts the answers back into ``form`` for redisplay."""
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    booleans = set(data.getlist(BOOLEAN_MARKER))
    sub = Submission(app="")
    for f in form.params:
        schema = properties.get(f.key, {})
        if f.widget == "checkbox":
            if f.key in booleans:
                f.value = data.get(f.name) is not None
                sub.params[f.key] = f.value
            continue
        raw = str(data.get(f.name, "")).strip()
        f.value = raw
        if raw == "":
            continue  # left empty: the default applies, or the service says it is required
        sub.params[f.key] = _param_value(f, schema if isinstance(schema, dict) else {}, raw)
    for f in form.inputs:
        raw = str(data.get(f.name, "")).strip()
        f.value = raw
        if raw:
            sub.inputs[f.key] = raw
    for f in form.resources:
        raw = str(data.get(f.name, "")).strip()
        default = f.value
        f.value = raw
        if raw and _number(raw, False) != default:
            sub.resources[f.key] = _number(raw, f.key != "cpus")
    form.name = str(data.get("name", "")).strip()
    sub.name = form.name
    form.project = str(data.get("project", "")).strip()
    sub.project = form.project or None  # none chosen: the personal project
    form.tags = str(data.get("tags", ""))
    for line in form.tags.replace(",", "\n").splitlines():
        key, sep, value = line.strip().partition("=")
        if line.strip():
            if not sep or not key.strip():
                msg = f"write each tag as key=value ({line.strip()[:40]!r} is not)"
                form.problems.append({"loc": ["body", "tags"], "msg": msg})
                continue
            sub.tags[key.strip()] = value.strip()
    return sub


def summary(form: RunForm) -> list[tuple[str, str, str]]:
    """(field id, label, message) of each field with an error, in the order of the page."""
    found = [
        (f"f-{f.name.replace('.', '-')}", f.label, f.error) for f in (*form.inputs, *form.params) if f.error
    ]
    if form.project_error:
        found.append(("f-project", "Project", form.project_error))
    if form.tags_error:
        found.append(("f-tags", "Tags", form.tags_error))
    found += [(f"f-{f.name.replace('.', '-')}", f.label, f.error) for f in form.resources if f.error]
    for n, (name, _, _) in enumerate(form.devices, start=1):
        if form.device_errors.get(name):
            found.append((f"device-params-{n}", f"Device {name}", form.device_errors[name]))
    return found


def device_params(form: RunForm, spec: EntrypointSpec, raw: str) -> dict[str, Any]:
    """A device's own answers, ``key=value, key=value``, typed as the form's fields are; ValueError for
    text that is no such list or names no parameter."""
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    fields = {f.key: f for f in form.params}
    out: dict[str, Any] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"{part!r}: write parameter=value pairs (parameters: {', '.join(fields)})")
        schema = properties.get(key, {})
        out[key] = _param_value(fields[key], schema if isinstance(schema, dict) else {}, value.strip())
    return out


def attach_errors(form: RunForm, errors: list[dict[str, Any]]) -> None:
    """Place each ``{loc, msg}`` from the service next to its field; the rest above the form."""
    by_name = {f.name: f for f in (*form.params, *form.inputs, *form.resources)}
    for error in errors:
        loc = [str(p) for p in error.get("loc", [])]
        if loc and loc[0] == "body":
            loc = loc[1:]
        if (
            loc[:1] == ["devices"]
            and len(loc) >= 2
            and loc[1].isdigit()
            and int(loc[1]) < len(form.chosen_devices)
        ):
            name = form.chosen_devices[int(loc[1])]
            said = ".".join(loc[2:])
            message = f"{said}: {error.get('msg', 'invalid')}" if said else str(error.get("msg", "invalid"))
            form.device_errors[name] = f"{form.device_errors.get(name, '')} {message}".strip()
            continue
        target = by_name.get(".".join(loc[:2])) if len(loc) >= 2 else None
        message = str(error.get("msg", "invalid"))
        if loc == ["project"]:
            form.project_error = f"{form.project_error} {message}".strip()
        elif loc[:1] == ["tags"]:
            form.tags_error = f"{form.tags_error} {message}".strip()
        elif target is not None:
            target.error = f"{target.error} {message}".strip() if target.error else message
        else:
            where = ".".join(loc)
            form.errors.append(f"{where}: {message}" if where else message)
