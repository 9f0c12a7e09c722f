"""The answers of GA4GH TES 1.1 (shared/specs/ga4gh-tes-1.1.openapi.yaml), for the OpenAPI document only.

The routes answer the dicts :mod:`labcloud.services.tes_views` cuts for each view (``response_model=None``): a
response model would add every field it names to every answer, and the MINIMAL and BASIC views must not
gain any. So these models say what may be there; a field the spec does not require is left out of an
answer that has nothing for it, never sent as null, and the schemas say so (no ``null`` type).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labcloud.services.tes_views import STATES


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional field of a TES message is absent when it has nothing: drop ``null`` from its schema."""
    for prop in schema.get("properties", {}).values():
        choices = prop.pop("anyOf", None)
        if choices is not None:
            kept = [choice for choice in choices if choice != {"type": "null"}]
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Message(BaseModel):
    model_config = ConfigDict(json_schema_extra=_absent_not_null)


class TesInput(_Message):
    """An input file of a task (its inline content is never shown back)."""

    name: str | None = None
    description: str | None = None
    url: str | None = Field(
        None, description="Where it comes from: labcloud:///path in your space, s3://, http(s)://."
    )
    path: str = Field(description="Its absolute path inside the containers.")
    type: Literal["FILE", "DIRECTORY"] | None = None
    content: str | None = Field(None, description="Inline content; never in an answer of this server.")
    streamable: bool | None = None


class TesOutput(_Message):
    """An output file (or folder, or files matching a pattern) of a task, and where it goes."""

    name: str | None = None
    description: str | None = None
    url: str = Field(description="Where it goes: labcloud:///path in your space, or s3://.")
    path: str = Field(description="Its absolute path inside the containers; may hold wildcards.")
    path_prefix: str | None = Field(None, description="What to cut off the matches of a wildcard path.")
    type: Literal["FILE", "DIRECTORY"] | None = None


class TesResources(_Message):
    """What the task asks for."""

    cpu_cores: int | None = None
    preemptible: bool | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = Field(
        None, description="Only the keys this server supports are kept (service-info lists them)."
    )
    backend_parameters_strict: bool | None = None


class TesExecutor(_Message):
    """A command run in a container of its own; the executors run one after the other."""

    image: str
    command: list[str]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TesExecutorLog(_Message):
    """How an executor ran; its stdout and stderr only in the FULL view."""

    start_time: str | None = Field(None, description="RFC 3339.")
    end_time: str | None = Field(None, description="RFC 3339.")
    stdout: str | None = Field(None, description="The end of its output (stdout and stderr together).")
    stderr: str | None = None
    exit_code: int


class TesOutputFileLog(_Message):
    """A file an output delivered."""

    url: str
    path: str
    size_bytes: str = Field(description="Its size in bytes, as a string (JSON has no int64).")


class TesTaskLog(_Message):
    """The task's run; its system_logs only in the FULL view."""

    logs: list[TesExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = Field(None, description="RFC 3339.")
    end_time: str | None = Field(None, description="RFC 3339.")
    outputs: list[TesOutputFileLog]
    system_logs: list[str] | None = None


class TesTask(_Message):
    """A task. MINIMAL view: id and state only; BASIC: all but the executors' output and the system logs;
    FULL: all. Inline content is never shown back."""

    id: str | None = None
    state: str | None = Field(None, json_schema_extra={"enum": list(STATES)})
    name: str | None = None
    description: str | None = None
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] | None = Field(
        None, description="Required by the spec, and in every view but MINIMAL, which leaves them out."
    )
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TesTaskLog] | None = None
    creation_time: str | None = Field(None, description="RFC 3339.")


class TesCreateTaskResponse(_Message):
    id: str = Field(description="The new task's id.")


class TesListTasksResponse(_Message):
    tasks: list[TesTask] = Field(description="Newest first, in the view asked for.")
    next_page_token: str | None = Field(None, description="Where the next page starts; none on the last.")


class TesCancelTaskResponse(_Message):
    """Empty."""


class TesServiceType(_Message):
    group: str
    artifact: Literal["tes"]
    version: str


class TesOrganization(_Message):
    name: str
    url: str


class TesServiceInfo(_Message):
    """The service (GA4GH service-info 1.0.0) and what of TES it supports."""

    id: str
    name: str
    type: TesServiceType
    description: str | None = None
    organization: TesOrganization
    contactUrl: str | None = None
    documentationUrl: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
    environment: str | None = None
    version: str
    storage: list[str] | None = Field(None, description="The kinds of url inputs and outputs may have.")
    tesResources_backend_parameters: list[str] | None = Field(
        None, description="The keys of resources.backend_parameters this server supports."
    )
