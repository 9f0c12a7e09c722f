"""A GA4GH TES task document as it arrives: the models of what a client sends (what a client sends back
from a task it read is ignored), and what of it is stored and shown (:func:`document`). Its checks are
:mod:`.tes_document`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The keys of resources.backend_parameters this server takes: the task's time limit, and the labcloud
# project it runs in and answers to (a slug; default the caller's personal project).
BACKEND_PARAMETERS = ("timeout_s", "project")


MAX_EXECUTORS, MAX_FILES, MAX_VOLUMES, MAX_ARGS = 100, 1000, 100, 10_000


class _In(BaseModel):
    # Fields a client sends back from a task it read (id, state, logs, creation_time) are ignored.
    model_config = ConfigDict(extra="ignore")


class InputIn(_In):
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)
    url: str | None = Field(None, max_length=4096)
    path: str = Field(max_length=1024)
    type: Literal["FILE", "DIRECTORY"] | None = None
    content: str | None = None
    streamable: bool | None = None


class OutputIn(_In):
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)
    url: str = Field(max_length=4096)
    path: str = Field(max_length=1024)
    path_prefix: str | None = Field(None, max_length=1024)
    type: Literal["FILE", "DIRECTORY"] | None = None


class ResourcesIn(_In):
    cpu_cores: int | None = Field(None, ge=0, le=1024)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, ge=0, le=16 * 1024)
    disk_gb: float | None = Field(None, ge=0)
    zones: list[str] | None = Field(None, max_length=100)
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class ExecutorIn(_In):
    image: str = Field(max_length=255)
    command: list[str] = Field(max_length=MAX_ARGS)
    workdir: str | None = Field(None, max_length=1024)
    stdin: str | None = Field(None, max_length=1024)
    stdout: str | None = Field(None, max_length=1024)
    stderr: str | None = Field(None, max_length=1024)
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TaskIn(_In):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=100_000)
    inputs: list[InputIn] | None = Field(None, max_length=MAX_FILES)
    outputs: list[OutputIn] | None = Field(None, max_length=MAX_FILES)
    resources: ResourcesIn | None = None
    executors: list[ExecutorIn] = Field(min_length=1, max_length=MAX_EXECUTORS)
    volumes: list[str] | None = Field(None, max_length=MAX_VOLUMES)
    tags: dict[str, str] | None = None


def document(task: TaskIn) -> dict[str, Any]:
    """The task as stored and shown: what was given, without inline content and unsupported parameters,
    with every input's and output's type."""
    doc = task.model_dump(mode="json", exclude_none=True)
    for item in doc.get("inputs", []):
        item.pop("content", None)
        item.setdefault("type", "FILE")
    for item in doc.get("outputs", []):
        item.setdefault("type", "FILE")
    params = doc.get("resources", {}).get("backend_parameters")
    if params is not None:
        doc["resources"]["backend_parameters"] = {
            k: v for k, v in params.items() if k.lower() in BACKEND_PARAMETERS
        }
    return doc
