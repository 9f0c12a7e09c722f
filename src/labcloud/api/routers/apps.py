"""The app registry: what can be run, with everything a client needs to build a form; for admins, the
container images of an app on this server's engine (and on the live workers'), and pulling them."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import Admin, Ctx, DbSession, DetachedAdmin, Reader
from labcloud.api.job_schemas import ResourcesOut
from labcloud.http.guard import GuardedRoute
from labcloud.registry import app_to_public
from labcloud.registry.models import AppSpec
from labcloud.services import images, workers

router = APIRouter(prefix="/api/v1/apps", tags=["apps"], route_class=GuardedRoute)


class InputOut(BaseModel):
    """A named input of an entrypoint: a file or folder of your space, staged before the job runs."""

    type: Literal["file", "folder"]
    required: bool
    description: str
    accept: list[str] = Field(default_factory=list, description="The file endings it takes; empty: any.")


class EntrypointOut(BaseModel):
    """One runnable command of an app version, with what a client needs to build a submit form."""

    available: bool = Field(description="False when this server cannot run it (see unavailable_reason).")
    unavailable_reason: str | None = Field(description="Why not: e.g. no container engine here.")
    description: str
    runtime: Literal["process", "container"]
    image: str | None = Field(description="The container image, for runtime container.")
    command: list[str] = Field(description="The command, with {params.X}, {inputs.X} and {output} in it.")
    parameters: dict[str, Any] = Field(description="The JSON Schema params are checked against at submit.")
    inputs: dict[str, InputOut]
    outputs: list[str] = Field(description="The files it is expected to write.")
    resources: ResourcesOut = Field(description="What a job gets unless the submission asks otherwise.")
    env: list[str] = Field(description="Environment variables a submission may set.")
    network: bool = Field(description="Whether its jobs may reach the network.")
    labels: dict[str, str] = Field(description="Worker labels its jobs need (e.g. platform=spinnaker).")
    spec_hash: str = Field(description="The SHA-256 of the spec; every job records the one it ran with.")


class VersionOut(BaseModel):
    entrypoints: dict[str, EntrypointOut]
    default_entrypoint: str | None = Field(description="The one a submission without entrypoint runs.")


class AppOut(BaseModel):
    """An app of the registry: its versions, newest first, and their entrypoints."""

    name: str
    title: str
    description: str
    latest_version: str
    version_order: list[str] = Field(description="The versions, newest first (JSON objects keep no order).")
    versions: dict[str, VersionOut]


class LoadProblemOut(BaseModel):
    """An app file of the registry that did not load."""

    path: str
    line: int | None
    message: str


class AppList(BaseModel):
    items: list[AppOut]
    problems: list[LoadProblemOut] | None = Field(
        None, description="Admins only: the app files that failed to load, and why."
    )


@router.get("", response_model=AppList, response_model_exclude_unset=True, summary="List apps")
def list_apps(principal: Reader, ctx: Ctx) -> dict[str, Any]:
    """Every app with its versions, entrypoints, parameter schemas and inputs. Admins also see the
    registry files that failed to load, and why."""
    apps = ctx.apps.apps()
    problem = ctx.container_problem() if any(_in_containers(app) for app in apps) else None
    body: dict[str, Any] = {"items": [app_to_public(app, problem) for app in apps]}
    if principal.user.is_admin:
        body["problems"] = [
            {"path": p.path, "line": p.line, "message": p.message} for p in ctx.apps.problems()
        ]
    return body


@router.get("/{app}", response_model=AppOut, summary="One app")
def get_app(app: str, _principal: Reader, ctx: Ctx) -> dict[str, Any]:
    found = ctx.apps.get(app)
    return app_to_public(found, ctx.container_problem() if _in_containers(found) else None)


def _in_containers(app: AppSpec) -> bool:
    return any(ep.runtime == "container" for v in app.versions.values() for ep in v.entrypoints.values())


class EngineImageOut(BaseModel):
    kind: str | None = Field(description="docker, podman or apptainer; null when no engine answers here")
    present: bool = Field(description="The engine holds the image (a job can run it).")
    id: str | None = Field(description="The image's content id (sha256:...) when present.")
    problem: str | None = Field(description="Why it is not present, in the engine's words, or why no engine.")


class WorkerImageOut(BaseModel):
    name: str = Field(description="The worker's name.")
    kind: str = Field(description="Its engine: docker, podman or apptainer.")
    present: bool = Field(description="Its engine holds the image (by reference, digest or content id).")
    id: str | None = Field(description="The image's content id there (sha256:...), when the worker said.")


class ImageOut(BaseModel):
    version: str
    entrypoint: str
    image: str
    engine: EngineImageOut
    workers: list[WorkerImageOut] = Field(
        description="Each live worker with a container engine (a heartbeat within a lease), as it said."
    )


class ImagesOut(BaseModel):
    app: str
    items: list[ImageOut] = Field(description="Each container entrypoint of each version, newest first.")


class PullIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, max_length=64, description="Default: the latest version.")


class PullResultOut(BaseModel):
    image: str
    ok: bool
    id: str | None = Field(description="The image's content id (sha256:...) after a pull that worked.")
    message: str = Field(description="What the engine said (why it failed).")


class PullOut(BaseModel):
    app: str
    version: str
    results: list[PullResultOut]


@router.get(
    "/{app}/images",
    response_model=ImagesOut,
    operation_id="list_app_images",
    summary="Admin: an app's images on this server and on the workers",
)
def app_images(app: str, _admin: Admin, session: DbSession, ctx: Ctx) -> ImagesOut:
    """Which images of the app's container entrypoints this server's engine holds (jobs never pull), and
    which live workers' engines hold them (as their heartbeats said)."""
    found = ctx.apps.get(app)
    live = images.worker_engines(workers.with_engines(session, ctx.settings))
    engine, problem = ctx.container_engine()
    states = images.image_states(found, engine, problem, live)
    return ImagesOut(app=found.name, items=[ImageOut(**dataclasses.asdict(s)) for s in states])


@router.post(
    "/{app}/pull",
    response_model=PullOut,
    operation_id="pull_app_images",
    summary="Admin: pull an app version's images",
)
def pull(app: str, admin: DetachedAdmin, ctx: Ctx, body: PullIn | None = None) -> PullOut:
    """Pull the images of one version (the latest by default) on this server's engine, each once, with the
    configured registry credentials. Answers when every pull has ended: a pull that failed is a result
    (`ok: false`, the engine's words), not an error."""
    found, version = ctx.apps.pick_version(app, body.version if body else None)
    engine, problem = ctx.container_engine()
    timeout = ctx.settings.container_pull_timeout_s
    results = images.pull_images(found, version, engine, problem, timeout, admin.user.email)
    return PullOut(
        app=found.name, version=version, results=[PullResultOut(**dataclasses.asdict(r)) for r in results]
    )
