"""Parameter sweeps: one submission that makes a job per combination of a grid's values (or per set of
parameters), its progress rolled up from its jobs' states, its jobs page by page, and cancel-all."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from labcloud.api.deps import Ctx, DbSession, PageCursor, PageLimit, Reader, Writer
from labcloud.api.job_schemas import JobOut
from labcloud.api.openapi import problems
from labcloud.api.schemas import PageOut
from labcloud.db.models import JobGroup
from labcloud.http.guard import GuardedRoute
from labcloud.services import jobs as job_service
from labcloud.services import projects, sweeps
from labcloud.services.job_states import JobState
from labcloud.services.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/v1/sweeps", tags=["sweeps"], route_class=GuardedRoute)


class SweepIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "app": "lif",
                    "params": {"duration_ms": 500},
                    "grid": {"i_ext": [1.0, 1.5, 2.0], "tau_m": [10, 20]},
                },
                {"app": "lif", "sets": [{"i_ext": 1.0}, {"i_ext": 2.0, "tau_m": 5}]},
            ]
        },
    )

    app: str = Field(max_length=64)
    version: str | None = Field(None, max_length=64)
    entrypoint: str | None = Field(None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, description="Shared by every job of the sweep.")
    grid: dict[str, list[Any]] | None = Field(
        None,
        max_length=32,
        description="A job for every combination of these values (parameter → list of values).",
    )
    sets: list[dict[str, Any]] | None = Field(
        None, description="Instead of grid: a job for each of these sets of parameters."
    )
    inputs: dict[str, str] = Field(default_factory=dict, description="Shared inputs: slot → path.")
    env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict, description="Each job's.")
    name: str = Field("", max_length=200)
    tags: dict[str, str] = Field(default_factory=dict, description="Every job's.")
    project: str | None = Field(None, max_length=40)
    notify: Literal["always", "failure", "never"] | None = Field(
        None, description="An e-mail as each job ends; default: never (a sweep's jobs are many)."
    )


class SweepOut(BaseModel):
    id: uuid.UUID
    name: str
    app: str
    version: str
    entrypoint: str
    project: str
    params: dict[str, Any] = Field(description="The parameters every job shares.")
    varies: list[str] = Field(description="The parameters that differ from job to job.")
    total: int = Field(description="Its jobs.")
    counts: dict[str, int] = Field(description="Its jobs by state.")
    state: str = Field(
        description="queued (nothing started), running, or once every job has ended: succeeded, failed, "
        "cancelled, or partial (some succeeded and some did not)."
    )
    done: float = Field(description="The fraction of its jobs that have ended.")
    created_at: datetime


def _out(seen: sweeps.View, project: str) -> SweepOut:
    g = seen.group
    ended = sum(n for s, n in seen.counts.items() if s in ("succeeded", "failed", "cancelled"))
    return SweepOut(
        id=g.id,
        name=g.name,
        app=g.app,
        version=g.version,
        entrypoint=g.entrypoint,
        project=project,
        params=g.params,
        varies=seen.varies,
        total=seen.total,
        counts=seen.counts,
        state=seen.state,
        done=round(ended / seen.total, 4) if seen.total else 0.0,
        created_at=g.created_at,
    )


def _one(session: Session, group: JobGroup) -> SweepOut:
    slug = projects.slugs(session, [group.project_id]).get(group.project_id, "")
    return _out(sweeps.view_one(session, group), slug)


@router.post(
    "",
    response_model=SweepOut,
    status_code=status.HTTP_201_CREATED,
    operation_id="submit_sweep",
    responses=problems(409),
    summary="Submit a sweep: a job for each combination or set of parameters",
)
def submit(body: SweepIn, principal: Writer, session: DbSession, ctx: Ctx) -> SweepOut:
    """Every job is checked before any is queued: one 422 lists every problem, a job's own value at its
    place (`grid.NAME.J`, `sets.I.NAME`), a shared one once. All are queued in one transaction, with the
    project's quotas held for all of them (409 when they do not fit: none is queued)."""
    group = ctx.submit_sweep(session, principal.user, sweeps.SweepRequest(**body.model_dump()))
    return _one(session, group)


@router.get("", response_model=PageOut[SweepOut], operation_id="list_sweeps", summary="Your sweeps")
def list_all(
    principal: Reader,
    session: DbSession,
    project: str | None = Query(None, max_length=40, description="A project's sweeps, everyone's."),
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> PageOut[SweepOut]:
    page = sweeps.list_sweeps(session, principal.user, project, limit=limit, cursor=cursor)
    counts = sweeps.counts_of(session, [g.id for g in page.items])
    slugs = projects.slugs(session, [g.project_id for g in page.items])
    return PageOut.of(page, lambda g: _out(sweeps.view(g, counts[g.id]), slugs.get(g.project_id, "")))


@router.get("/{group_id}", response_model=SweepOut, operation_id="get_sweep", summary="One sweep")
def get_one(group_id: uuid.UUID, principal: Reader, session: DbSession) -> SweepOut:
    return _one(session, sweeps.get(session, principal.user, group_id))


@router.get(
    "/{group_id}/jobs", response_model=PageOut[JobOut], operation_id="sweep_jobs", summary="A sweep's jobs"
)
def jobs_of(
    group_id: uuid.UUID,
    principal: Reader,
    session: DbSession,
    ctx: Ctx,
    state: list[JobState] = Query([], description="Repeat for several states."),
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> PageOut[JobOut]:
    """In the order they were made."""
    group = sweeps.get(session, principal.user, group_id)
    page = sweeps.jobs_page(session, group, limit=limit, cursor=cursor, states=list(dict.fromkeys(state)))
    names = job_service.names_of(session, page.items)

    def one(job: Any) -> JobOut:
        out = JobOut.model_validate(job)
        out.message = ctx.message(job)
        out.project = names.projects.get(job.project_id, "")
        out.owner = names.owners.get(job.owner_id, "")
        out.worker = names.workers.get(job.worker_id) if job.worker_id is not None else None
        return out

    return PageOut[JobOut].of(page, one)


@router.post(
    "/{group_id}/cancel",
    response_model=SweepOut,
    operation_id="cancel_sweep",
    summary="Cancel every job of the sweep that has not ended",
)
def cancel(group_id: uuid.UUID, principal: Writer, session: DbSession, ctx: Ctx) -> SweepOut:
    return _one(session, ctx.cancel_sweep(session, principal.user, group_id))
