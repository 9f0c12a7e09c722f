"""Admin: register remote workers (token shown once), list them with their state, say where and what they
are, drain, revoke."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import Admin, Ctx, DbSession, PageCursor, PageLimit
from labcloud.api.openapi import problems
from labcloud.api.worker_schemas import StatusProblem
from labcloud.db.models import Worker
from labcloud.http.guard import GuardedRoute
from labcloud.services import devices, workers
from labcloud.services.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/v1/workers", tags=["workers"], route_class=GuardedRoute)


class WorkerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    labels: dict[str, str] = Field(default_factory=dict, description="e.g. {platform: spinnaker, gpu: a100}")
    location: str = Field("", max_length=200, description="where it is: a room, a rig (one line)")
    description: str = Field("", max_length=2000, description="what it is, in words")


class WorkerPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100, description="a new name")
    location: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)


class WorkerOut(BaseModel):
    id: uuid.UUID
    name: str
    labels: dict[str, str]
    location: str
    description: str
    state: str = Field(
        description="active, draining, waiting (registered, never heard from), lost (no heartbeat for a "
        "lease) or revoked"
    )
    device_state: str = Field(
        description="as the devices page says: busy (holding jobs), idle (heartbeating, no jobs), draining, "
        "down (no heartbeat for device_down_after_s), waiting, revoked, or up (an executor's engine)"
    )
    token_prefix: str
    created_at: datetime
    last_heartbeat_at: datetime | None
    capacity: dict[str, Any]
    telemetry: dict[str, Any]
    version: str
    engines: list[dict[str, Any]] = Field(
        description='container engines, as its last heartbeat said: [{"kind": "docker", "images": [...], '
        '"image_ids": {reference: content id}}]'
    )
    engine_problem: str = Field(description="why it has no container engine (empty when it has one)")
    status_problems: list[StatusProblem] = Field(
        description="what was wrong with the status (telemetry.status) of its last heartbeat"
    )
    running_jobs: list[uuid.UUID]


class WorkerCreated(WorkerOut):
    token: str = Field(description="The worker token, shown only this once.")


class WorkerPage(BaseModel):
    items: list[WorkerOut]
    next_cursor: str | None = None


def _out(worker: Worker, ctx: Ctx, running: list[uuid.UUID]) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.name,
        "labels": worker.labels,
        "location": worker.location,
        "description": worker.description,
        "state": workers.state_of(worker, ctx.settings),
        "device_state": devices.device_state(worker, ctx.settings, bool(running)),
        "token_prefix": worker.token_prefix,
        "created_at": worker.created_at,
        "last_heartbeat_at": worker.last_heartbeat_at,
        "capacity": worker.capacity,
        "telemetry": worker.telemetry,
        "version": worker.version,
        "engines": worker.engines,
        "engine_problem": worker.engine_problem,
        "status_problems": worker.status_problems or [],
        "running_jobs": running,
    }


@router.post(
    "",
    response_model=WorkerCreated,
    status_code=status.HTTP_201_CREATED,
    operation_id="register_worker",
    responses=problems(409),
    summary="Register a worker",
)
def create(body: WorkerIn, _admin: Admin, session: DbSession, ctx: Ctx) -> WorkerCreated:
    """Run `labcloud worker --server URL` with the returned token (env `LABCLOUD_WORKER_TOKEN`)."""
    worker, token = workers.register(
        session, body.name, body.labels, location=body.location, description=body.description
    )
    return WorkerCreated(**_out(worker, ctx, []), token=token)


@router.get(
    "",
    response_model=WorkerPage,
    operation_id="list_workers",
    summary="Workers with state, heartbeat, capacity and jobs",
)
def list_all(
    _admin: Admin,
    session: DbSession,
    ctx: Ctx,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> WorkerPage:
    page = workers.list_workers(session, limit=limit, cursor=cursor)
    running = workers.running_jobs(session, [w.id for w in page.items])
    return WorkerPage(
        items=[WorkerOut(**_out(w, ctx, running.get(w.id, []))) for w in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{worker_id}", response_model=WorkerOut, operation_id="get_worker", summary="One worker")
def get_one(worker_id: uuid.UUID, _admin: Admin, session: DbSession, ctx: Ctx) -> WorkerOut:
    worker = workers.get(session, worker_id)
    return WorkerOut(**_out(worker, ctx, workers.running_jobs(session, [worker.id]).get(worker.id, [])))


@router.patch(
    "/{worker_id}",
    response_model=WorkerOut,
    operation_id="update_worker",
    responses=problems(409),
    summary="Rename a worker, or change its location or description",
)
def update(worker_id: uuid.UUID, body: WorkerPatch, _admin: Admin, session: DbSession, ctx: Ctx) -> WorkerOut:
    """Only the fields given change; its token, labels and jobs stay. A name is unique and has no slash."""
    worker = workers.update(
        session,
        workers.get(session, worker_id),
        name=body.name,
        location=body.location,
        description=body.description,
    )
    session.flush()
    return WorkerOut(**_out(worker, ctx, workers.running_jobs(session, [worker.id]).get(worker.id, [])))


@router.post(
    "/{worker_id}/drain",
    response_model=WorkerOut,
    operation_id="drain_worker",
    responses=problems(409),
    summary="Finish current jobs, take no more",
)
def drain(worker_id: uuid.UUID, _admin: Admin, session: DbSession, ctx: Ctx) -> WorkerOut:
    worker = workers.drain(session, workers.get(session, worker_id))
    return WorkerOut(**_out(worker, ctx, workers.running_jobs(session, [worker.id]).get(worker.id, [])))


@router.post(
    "/{worker_id}/revoke",
    response_model=WorkerOut,
    operation_id="revoke_worker",
    summary="Revoke the token; its jobs are re-queued",
)
def revoke(worker_id: uuid.UUID, _admin: Admin, session: DbSession, ctx: Ctx) -> WorkerOut:
    return WorkerOut(**_out(ctx.revoke_worker(session, worker_id), ctx, []))
