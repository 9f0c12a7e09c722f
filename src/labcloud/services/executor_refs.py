"""What an executor keeps about a job's current attempt (the ``executor_ref`` column): a typed union.

- :class:`AttemptRef`, ``{"kind": "attempt", "log_base": 0}``: a remote worker's attempt, or an engine's
  attempt that the engine does not have yet (handed over, not yet sent);
- :class:`SlurmRef`, ``{"kind": "slurm", "log_base": 0, "slurm_id": "123"}`` and :class:`CeleryRef`,
  ``{"kind": "celery", "log_base": 0, "task_id": "<job id>.<attempt>"}``: the attempt as its engine names it.

``log_base`` is the byte of the job's log where the attempt's own log starts: a worker counts offsets from
its own first byte, so a retry appends after the earlier attempts' lines. The local executor keeps nothing.

The column stays JSON text (:class:`ExecutorRefText`). Rows written before refs had a ``kind`` are told apart
by their keys, and the keys are the same as theirs, so servers of either version read the other's rows. What
cannot be read is no ref (None), as an unknown kind is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import Dialect, Text
from sqlalchemy.types import TypeDecorator


class _Ref(BaseModel):
    # coerce_numbers_to_str: a Slurm id may have been written as a number
    model_config = ConfigDict(
        frozen=True, validate_by_name=True, serialize_by_alias=True, coerce_numbers_to_str=True
    )

    log_base: int = Field(0, ge=0, description="Where this attempt's log starts in the job's log (bytes).")


class AttemptRef(_Ref):
    """An attempt that no engine names: a remote worker's, or an engine's before it reached the engine."""

    kind: Literal["attempt"] = "attempt"


class EngineRef(_Ref):
    """An attempt its engine has: what the engine calls it (``engine_id``, under the engine's own key)."""

    engine_id: str


class SlurmRef(EngineRef):
    kind: Literal["slurm"] = "slurm"
    engine_id: str = Field(alias="slurm_id")


class CeleryRef(EngineRef):
    kind: Literal["celery"] = "celery"
    engine_id: str = Field(alias="task_id")


EngineRefs = SlurmRef | CeleryRef  # one per engine: a new engine adds its own here
ExecutorRef = Annotated[AttemptRef | EngineRefs, Field(discriminator="kind")]
_REFS: TypeAdapter[ExecutorRef] = TypeAdapter(ExecutorRef)
# Rows from before the kind was written: {"log_base": ...} with the engine's key when it had one.
_LEGACY_KEYS = {"slurm_id": "slurm", "task_id": "celery"}


def parse(raw: str | None) -> ExecutorRef | None:
    """The ref in a column's text; None when there is none or it cannot be read."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if "kind" not in data:
        data["kind"] = next((kind for key, kind in _LEGACY_KEYS.items() if key in data), "attempt")
    try:
        return _REFS.validate_python(data)
    except ValidationError:
        return None


def log_base(ref: _Ref | None) -> int:
    """Where the attempt's log starts in the job's log (0 without a ref)."""
    return ref.log_base if ref is not None else 0


def engine_id(ref: _Ref | None) -> str | None:
    """What the engine calls the attempt; None while no engine has it."""
    return ref.engine_id if isinstance(ref, EngineRef) else None


def with_log_base(ref: ExecutorRef | None, log_base: int) -> ExecutorRef:
    """The same ref, for an attempt whose log starts at ``log_base``."""
    return (ref or AttemptRef()).model_copy(update={"log_base": log_base})


class ExecutorRefText(TypeDecorator[ExecutorRef]):
    """An :data:`ExecutorRef` as JSON in a text column."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: _Ref | None, dialect: Dialect) -> str | None:
        return None if value is None else value.model_dump_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> ExecutorRef | None:
        return parse(value)
