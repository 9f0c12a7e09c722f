"""A project's budget: its quotas (members read them, admins set them), its storage, its usage reports
(JSON or CSV; across projects for admins) and the requests for more. The rules are
:mod:`labcloud.services.quotas`, :mod:`labcloud.services.quota_requests` and
:mod:`labcloud.services.accounting`; who may do what, :mod:`labcloud.services.projects`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from labcloud.api.deps import Admin, AppSettings, DbSession, Reader, Writer
from labcloud.api.openapi import problems
from labcloud.db.models import Project
from labcloud.http.guard import GuardedRoute
from labcloud.services import accounting, projects, quota_requests, quotas, storage_limits
from labcloud.services.projects import Action
from labcloud.settings import Settings

router = APIRouter(prefix="/api/v1/projects", tags=["projects"], route_class=GuardedRoute)


# A usage report answers JSON, or CSV with format=csv.
CSV_TOO = {
    "content": {"text/csv": {"schema": {"type": "string", "description": "the rows as CSV, a header first"}}}
}


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: float = Field(ge=0)
    period: Literal["monthly", "daily", "allocation", "none"] = "monthly"
    starts_at: AwareDatetime | None = Field(None, description="An allocation's first moment.")
    ends_at: AwareDatetime | None = Field(None, description="An allocation's end (exclusive).")


class QuotaOut(BaseModel):
    resource: str = Field(description="cpu_hours, gpu_hours, concurrent_jobs or jobs_per_day")
    unit: str
    limit: float
    period: str
    starts_at: datetime | None
    ends_at: datetime | None
    period_start: datetime | None = Field(description="Where the current period began (resets then).")
    used: float = Field(description="What ended jobs used (this period).")
    reserved: float = Field(description="What unfinished jobs may still take (their worst case).")
    left: float
    percent: float = Field(description="Of the limit used or held.")
    level: Literal["ok", "warning", "exceeded"] = Field(description="warning from 80%, exceeded at 100%.")


class ProjectUsageRow(BaseModel):
    model_config = ConfigDict(extra="allow")  # the grouped-by column is named after the grouping

    attempts: int
    cpu_hours: float
    gpu_hours: float
    wall_hours: float
    peak_memory_mb: float


class ProjectUsageOut(BaseModel):
    by: str
    rows: list[ProjectUsageRow] = Field(
        description="Each row also has the grouping's column (by) with its value."
    )


class QuotaRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: str = Field(max_length=32, description="A quota the project has: cpu_hours, gpu_hours, ...")
    amount: float = Field(description="How much more than the limit is now.")
    justification: str = Field(max_length=5000, description="Why: what it is for.")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


class QuotaRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    resource: str
    amount: float
    justification: str
    requested_by: uuid.UUID | None
    state: Literal["pending", "approved", "rejected"]
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    note: str
    created_at: datetime


def _quota_out(state: quotas.QuotaState) -> QuotaOut:
    q = state.quota
    return QuotaOut(
        resource=q.resource,
        unit=quotas.UNITS[q.resource],
        limit=q.limit,
        period=q.period,
        starts_at=q.starts_at,
        ends_at=q.ends_at,
        period_start=q.period_start,
        used=round(q.used, 6),
        reserved=round(q.reserved, 6),
        left=round(state.left, 6),
        percent=round(100 * state.fraction, 1),
        level=state.level,
    )


@router.get(
    "/{slug}/quotas",
    response_model=list[QuotaOut],
    responses=problems(404),
    summary="The project's quotas: limit, used, held by unfinished jobs, left, and a warning level",
)
def list_quotas(slug: str, principal: Reader, session: DbSession, settings: AppSettings) -> list[QuotaOut]:
    project = projects.by_slug(session, principal.user, slug)
    return [_quota_out(state) for state in quotas.states(session, project, settings.default_quotas)]


@router.put(
    "/{slug}/quotas/{resource}",
    response_model=list[QuotaOut],
    responses=problems(404, 422),
    summary="Admin: set a quota (what was used this period stays)",
)
def set_quota(
    slug: str, resource: str, body: QuotaIn, principal: Admin, session: DbSession
) -> list[QuotaOut]:
    project = projects.by_slug(session, principal.user, slug)
    quotas.set_quota(session, project, resource, body.limit, body.period, body.starts_at, body.ends_at)
    return [_quota_out(state) for state in quotas.states(session, project)]


@router.delete(
    "/{slug}/quotas/{resource}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    summary="Admin: no quota of this resource any more",
)
def remove_quota(slug: str, resource: str, principal: Admin, session: DbSession) -> Response:
    quotas.remove_quota(session, projects.by_slug(session, principal.user, slug), resource)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class StorageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit_bytes: int | None = Field(
        ge=0, description="0: no limit; null: the default (a personal project's user's, else the setting's)"
    )


class StorageOut(BaseModel):
    used_bytes: int
    limit_bytes: int | None = Field(description="null: no limit")
    available_bytes: int | None


def _storage_out(session: Session, settings: Settings, project: Project) -> StorageOut:
    used, limit = storage_limits.usage(session, settings, project.id)
    return StorageOut(
        used_bytes=used, limit_bytes=limit, available_bytes=None if limit is None else max(limit - used, 0)
    )


@router.get(
    "/{slug}/storage",
    response_model=StorageOut,
    responses=problems(404),
    summary="What the project's files use of its storage limit",
)
def project_storage(slug: str, principal: Reader, session: DbSession, settings: AppSettings) -> StorageOut:
    return _storage_out(session, settings, projects.by_slug(session, principal.user, slug))


@router.put(
    "/{slug}/storage",
    response_model=StorageOut,
    responses=problems(404),
    summary="Admin: set the storage limit of the project's files",
)
def set_project_storage(
    slug: str, body: StorageIn, principal: Admin, session: DbSession, settings: AppSettings
) -> StorageOut:
    project = projects.by_slug(session, principal.user, slug)
    storage_limits.set_limit(session, project, body.limit_bytes)
    return _storage_out(session, settings, project)


@router.get(
    "/{slug}/usage",
    response_model=ProjectUsageOut,
    responses={200: CSV_TOO, **problems(404, 422)},
    summary="What the project used, per user, app, executor or month (JSON or CSV)",
)
def project_usage(
    slug: str,
    principal: Reader,
    session: DbSession,
    by: str = Query("user", description="user, app, executor or month"),
    since: AwareDatetime | None = Query(None),
    until: AwareDatetime | None = Query(None),
    format: Literal["json", "csv"] = Query("json"),
) -> ProjectUsageOut | PlainTextResponse:
    project = projects.by_slug(session, principal.user, slug)
    found = accounting.report(session, by, project_id=project.id, since=since, until=until)
    return usage_answer(found, format)


def usage_answer(found: accounting.Report, format: str) -> ProjectUsageOut | PlainTextResponse:
    if format == "csv":
        return PlainTextResponse(found.csv(), media_type="text/csv")
    return ProjectUsageOut(by=found.group_by, rows=[ProjectUsageRow(**row) for row in found.rows])


@router.post(
    "/{slug}/quota-requests",
    response_model=QuotaRequestOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 404, 422),
    summary="Ask for more of a quota (members), saying why",
)
def request_quota(slug: str, body: QuotaRequestIn, principal: Writer, session: DbSession) -> QuotaRequestOut:
    project = projects.by_slug(session, principal.user, slug, Action.RUN)
    found = quota_requests.request_more(
        session, principal.user.id, project, body.resource, body.amount, body.justification
    )
    return QuotaRequestOut.model_validate(found)


@router.get(
    "/{slug}/quota-requests",
    response_model=list[QuotaRequestOut],
    responses=problems(404),
    summary="The project's quota requests and their decisions, newest first",
)
def list_quota_requests(slug: str, principal: Reader, session: DbSession) -> list[QuotaRequestOut]:
    project = projects.by_slug(session, principal.user, slug)
    return [QuotaRequestOut.model_validate(r) for r in quota_requests.requests_of(session, project)]


@router.post(
    "/{slug}/quota-requests/{request_id}/{decision}",
    response_model=QuotaRequestOut,
    responses=problems(403, 404, 409, 422),
    summary="Approve (the limit grows by the amount) or reject a request (managers, admins)",
)
def decide_quota_request(
    slug: str,
    request_id: uuid.UUID,
    decision: Literal["approve", "reject"],
    body: DecisionIn,
    principal: Writer,
    session: DbSession,
) -> QuotaRequestOut:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    found = quota_requests.decide(
        session, principal.user, project, request_id, decision == "approve", body.note
    )
    return QuotaRequestOut.model_validate(found)


usage_router = APIRouter(prefix="/api/v1/usage", tags=["projects"], route_class=GuardedRoute)


@usage_router.get(
    "",
    response_model=ProjectUsageOut,
    responses={200: CSV_TOO, **problems(422)},
    summary="Admin: what every project used, per project, user, app, executor or month (JSON or CSV)",
)
def all_usage(
    principal: Admin,
    session: DbSession,
    by: str = Query("project", description="project, user, app, executor or month"),
    since: AwareDatetime | None = Query(None),
    until: AwareDatetime | None = Query(None),
    format: Literal["json", "csv"] = Query("json"),
) -> ProjectUsageOut | PlainTextResponse:
    return usage_answer(accounting.report(session, by, since=since, until=until), format)
