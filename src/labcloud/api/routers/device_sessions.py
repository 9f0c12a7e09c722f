"""Sessions across devices: one submission, one job on each chosen device (a pull worker), shared and
per-device parameters, the session's state rolled up from its jobs', and cancel-all."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from labcloud.api.deps import Ctx, DbSession, PageCursor, PageLimit, Reader, Writer
from labcloud.api.openapi import problems
from labcloud.api.schemas import PageOut
from labcloud.db.models import JobGroup
from labcloud.http.guard import GuardedRoute
from labcloud.services import device_sessions, projects
from labcloud.services.job_states import JobState
from labcloud.services.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], route_class=GuardedRoute)


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker: str = Field(min_length=1, max_length=100, description="The device: a worker's name.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="This device's own parameters (a file prefix...), over the shared ones.",
    )


class SessionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "app": "record",
                    "name": "mouse 12, day 3",
                    "params": {"duration_s": 600, "fps": 30},
                    "devices": [
                        {"worker": "enclosure-1", "params": {"prefix": "m12-a"}},
                        {"worker": "enclosure-2", "params": {"prefix": "m12-b"}},
                    ],
                }
            ]
        },
    )

    app: str = Field(max_length=64)
    version: str | None = Field(None, max_length=64)
    entrypoint: str | None = Field(None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, description="Shared by every device.")
    inputs: dict[str, str] = Field(default_factory=dict, description="Shared inputs: slot → path.")
    resources: dict[str, float] = Field(default_factory=dict)
    devices: list[DeviceIn] = Field(
        default_factory=list, max_length=device_sessions.MAX_DEVICES, description="The chosen devices."
    )
    labels: dict[
        Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=200)]
    ] = Field(
        default_factory=dict,
        description="Instead of devices: every connected device with these labels.",
    )
    name: str = Field("", max_length=200)
    tags: dict[str, str] = Field(default_factory=dict)
    project: str | None = Field(None, max_length=40)
    notify: Literal["always", "failure", "never"] | None = None


class PartOut(BaseModel):
    worker: str = Field(description="The device.")
    job_id: uuid.UUID
    run_number: int
    state: JobState
    reason: str | None
    message: str
    progress: float | None
    params: dict[str, Any] = Field(description="The job's parameters (shared and this device's own).")
    note: str = Field("", description="What was said of this device when the session started (busy...).")
    started_at: datetime | None
    finished_at: datetime | None


class SessionOut(BaseModel):
    id: uuid.UUID
    name: str
    app: str
    version: str
    entrypoint: str
    project: str
    params: dict[str, Any] = Field(description="The parameters shared by every device.")
    state: str = Field(
        description="queued (nothing started), running, or once every part has ended: succeeded, failed, "
        "cancelled, or partial (some parts succeeded and some did not)."
    )
    counts: dict[str, int] = Field(description="Its jobs by state.")
    devices: list[PartOut]
    created_at: datetime


def _out(session: Session, ctx: Ctx, group: JobGroup) -> SessionOut:
    seen = device_sessions.view(session, group)
    return SessionOut(
        id=group.id,
        name=group.name,
        app=group.app,
        version=group.version,
        entrypoint=group.entrypoint,
        project=projects.slugs(session, [group.project_id]).get(group.project_id, ""),
        params=group.params,
        state=seen.state,
        counts=seen.counts,
        devices=[
            PartOut(
                worker=m.worker,
                job_id=m.job.id,
                run_number=m.job.run_number,
                state=JobState(m.job.state),
                reason=m.job.reason,
                message=ctx.message(m.job),
                progress=m.job.progress,
                params=m.job.params,
                note=m.note,
                started_at=m.job.started_at,
                finished_at=m.job.finished_at,
            )
            for m in seen.members
        ],
        created_at=group.created_at,
    )


@router.post(
    "",
    response_model=SessionOut,
    status_code=status.HTTP_201_CREATED,
    operation_id="start_session",
    responses=problems(409),
    summary="Start a session: one job on each chosen device",
)
def start(body: SessionIn, principal: Writer, session: DbSession, ctx: Ctx) -> SessionOut:
    """Every device's job is checked first (one 422 lists every problem, a device's own at
    `devices[i]`), then all are queued together. Each runs only on its device, once; a device busy with
    another session's work still gets its part, which waits, and the part's `note` says so."""
    req = device_sessions.SessionRequest(
        **body.model_dump(exclude={"devices"}),
        devices=[device_sessions.DeviceRequest(d.worker, d.params) for d in body.devices],
    )
    group = ctx.start_session(session, principal.user, req)
    return _out(session, ctx, group)


@router.get("", response_model=PageOut[SessionOut], operation_id="list_sessions", summary="Your sessions")
def list_all(
    principal: Reader,
    session: DbSession,
    ctx: Ctx,
    project: str | None = Query(None, max_length=40, description="A project's sessions, everyone's."),
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> PageOut[SessionOut]:
    page = device_sessions.list_sessions(session, principal.user, project, limit=limit, cursor=cursor)
    return PageOut(items=[_out(session, ctx, g) for g in page.items], next_cursor=page.next_cursor)


@router.get("/{group_id}", response_model=SessionOut, operation_id="get_session", summary="One session")
def get_one(group_id: uuid.UUID, principal: Reader, session: DbSession, ctx: Ctx) -> SessionOut:
    return _out(session, ctx, device_sessions.get(session, principal.user, group_id))


@router.post(
    "/{group_id}/cancel",
    response_model=SessionOut,
    operation_id="cancel_session",
    summary="Cancel every part that has not ended",
)
def cancel(group_id: uuid.UUID, principal: Writer, session: DbSession, ctx: Ctx) -> SessionOut:
    group = ctx.cancel_session(session, principal.user, group_id)
    return _out(session, ctx, group)
