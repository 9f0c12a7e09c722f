"""The JSON Schemas a device's status must match, one per label (``key=value``): set by an admin, checked
at every heartbeat of a worker with that label (all of them, for a worker with several such labels).

Heartbeats must stay cheap (hundreds of devices every few seconds), so a server keeps the compiled schemas
in memory (:class:`SchemaCache`) and reads them again only every ``device_schema_cache_s`` seconds, or at
once after a change made through it; another replica's change applies here within that time.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import DeviceSchema
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput, NotFound
from labcloud.settings import Settings

MAX_SCHEMA_BYTES = 64 * 1024
MAX_PROBLEMS = 20  # problems kept per status: enough to fix it, bounded whatever the status is
MAX_MESSAGE = 300
Label = tuple[str, str]


def parse_label(text: str, loc: list[str | int] | None = None) -> Label:
    """``key=value`` into its parts (a label as workers carry it: a key of 1-64 characters, a value of up
    to 200)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or len(key) > 64 or len(value) > 200:
        raise InvalidInput.field(
            loc or ["path", "label"], "a label is key=value: a key of 1-64 characters, a value of up to 200"
        )
    return key, value


def label_text(label: Label) -> str:
    return f"{label[0]}={label[1]}"


def check_schema(schema: Any, loc: list[str | int] | None = None) -> dict[str, Any]:
    """A JSON Schema an admin gave: an object, at most 64 KiB, valid as a schema (its own dialect, else
    2020-12)."""
    loc = loc or ["body", "schema"]
    if not isinstance(schema, dict):
        raise InvalidInput.field(loc, 'a JSON Schema is an object, e.g. {"type": "object"}')
    if len(json.dumps(schema, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
        raise InvalidInput.field(loc, f"at most {MAX_SCHEMA_BYTES // 1024} KiB")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        at = f" at {where}" if where else ""
        raise InvalidInput.field(loc, f"not a valid JSON Schema{at}: {exc.message}") from None
    return schema


# ------------------------------------------------------------------------------------------- admin


def list_schemas(session: Session) -> list[DeviceSchema]:
    return list(session.scalars(select(DeviceSchema).order_by(DeviceSchema.key, DeviceSchema.value)))


def get(session: Session, label: Label) -> DeviceSchema:
    found = session.get(DeviceSchema, label)
    if found is None:
        raise NotFound(f"No status schema for the label {label_text(label)}.")
    return found


def put(session: Session, label: Label, schema: Any, by: uuid.UUID | None) -> tuple[DeviceSchema, bool]:
    """Set the schema of a label; whether it is new."""
    schema = check_schema(schema)
    found = session.get(DeviceSchema, label)
    if found is None:
        found = DeviceSchema(key=label[0], value=label[1], schema=schema, updated_by=by)
        session.add(found)
        session.flush()
        return found, True
    found.schema, found.updated_at, found.updated_by = schema, utcnow(), by
    return found, False


def delete(session: Session, label: Label) -> None:
    session.delete(get(session, label))


# ------------------------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Compiled:
    label: Label
    validator: Validator


class SchemaCache:
    """The compiled schemas of this server, read again when older than the settings say (or after
    :meth:`invalidate`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_label: dict[Label, Compiled] = {}
        self._loaded_at: float | None = None
        self._generation = 0  # a read that began before a change is not kept after it

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None
            self._generation += 1

    def current(self, session: Session, settings: Settings) -> Mapping[Label, Compiled]:
        now = time.monotonic()
        with self._lock:
            fresh = self._loaded_at is not None and now - self._loaded_at < settings.device_schema_cache_s
            if fresh:
                return self._by_label
            generation = self._generation
        rows = session.execute(select(DeviceSchema.key, DeviceSchema.value, DeviceSchema.schema)).all()
        compiled = {}
        for key, value, schema in rows:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            compiled[(key, value)] = Compiled((key, value), cls(schema))
        with self._lock:
            if generation == self._generation:
                self._by_label, self._loaded_at = compiled, now
        return compiled

    def validate(
        self, session: Session, settings: Settings, labels: Mapping[str, str], status: Any
    ) -> list[dict[str, str]]:
        """The problems of ``status`` against the schemas of ``labels`` (none when no label has one)."""
        by_label = self.current(session, settings)
        if not by_label:
            return []
        problems: list[dict[str, str]] = []
        for key, value in sorted(labels.items()):
            found = by_label.get((key, str(value)))
            if found is None:
                continue
            errors = sorted(
                found.validator.iter_errors(status), key=lambda e: list(map(str, e.absolute_path))
            )
            for error in errors:
                problems.extend(_problems_of(error, label_text(found.label)))
                if len(problems) >= MAX_PROBLEMS:
                    return problems[:MAX_PROBLEMS]
        return problems


REQUIRED = re.compile(r"^'(.+)' is a required property$", re.S)


def _problems_of(error: ValidationError, schema: str) -> list[dict[str, str]]:
    """One problem per field at fault, named from the status down (``status.camera.fps``): a missing
    required field by its own name, a field no schema allows by its own name too."""
    base = ".".join(["status", *(str(p) for p in error.absolute_path)])
    message = error.message if len(error.message) <= MAX_MESSAGE else error.message[: MAX_MESSAGE - 1] + "…"
    if error.validator == "required" and (match := REQUIRED.match(error.message)):
        return [{"field": f"{base}.{match.group(1)}", "message": "is required but missing", "schema": schema}]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema_part = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema_part.get("properties") or {})
        patterns = list(schema_part.get("patternProperties") or {})
        extra = [
            name
            for name in error.instance
            if name not in known and not any(re.search(p, name) for p in patterns)
        ]
        if extra:
            return [
                {"field": f"{base}.{name}", "message": "is not allowed here", "schema": schema}
                for name in extra[:MAX_PROBLEMS]
            ]
    return [{"field": base, "message": message, "schema": schema}]
