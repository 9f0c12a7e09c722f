"""Projects: yours with your role, create one, read one with its members, add and change members, join
codes, join by code, leave. The rules are :mod:`labcloud.services.projects`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy.orm import Session

from labcloud.api.deps import Admin, AppSettings, DbSession, Reader, Writer
from labcloud.api.guard import GuardedRoute
from labcloud.api.openapi import problems
from labcloud.db.models import Project, ProjectRole, User
from labcloud.errors import NotFound
from labcloud.services import accounting, files, projects, quotas
from labcloud.services import users as user_service
from labcloud.services.projects import Action
from labcloud.settings import Settings

router = APIRouter(prefix="/api/v1/projects", tags=["projects"], route_class=GuardedRoute)
# A usage report answers JSON, or CSV with format=csv.
CSV_TOO = {
    "content": {"text/csv": {"schema": {"type": "string", "description": "the rows as CSV, a header first"}}}
}


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    slug: str | None = Field(None, max_length=40, description="Default: made from the name.")
    description: str = Field("", max_length=2000)


class ProjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    over_quota: Literal["refuse", "cut"] | None = Field(
        None,
        description="A job whose worst case does not fit in a time quota: refused, or admitted with its "
        "time limit cut to what is left (it ends as quota_exceeded when it reaches it).",
    )


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


class ProjectOut(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    description: str
    personal: bool = Field(description="Your personal project: nobody else is in it.")
    role: ProjectRole | None = Field(description="Your role in it (none for an admin who is no member).")
    join_code_expires_at: datetime | None = Field(
        description="Until when its current join code works (managers see it; null: none)."
    )
    over_quota: str = Field(description="refuse or cut: what a job that does not fit in a time quota gets.")
    created_at: datetime


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: ProjectRole
    since: datetime


class ProjectDetail(ProjectOut):
    members: list[MemberOut]


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    role: ProjectRole = ProjectRole.MEMBER


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: ProjectRole


class JoinCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(projects.JOIN_CODE_DAYS, description="How long it works.")


class JoinCodeOut(BaseModel):
    code: str = Field(description="Shown only this once; a new one replaces it.")
    expires_at: datetime


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=200)


def _out(project: Project, role: ProjectRole | None, admin: bool) -> ProjectOut:
    manages = admin or (role is not None and projects.RANK[role] >= projects.RANK[ProjectRole.MANAGER])
    return ProjectOut(
        id=project.id,
        slug=project.slug,
        name=project.name,
        description=project.description,
        personal=project.personal_user_id is not None,
        role=role,
        join_code_expires_at=project.join_code_expires_at if manages else None,
        over_quota=project.over_quota,
        created_at=project.created_at,
    )


def _detail(session: Session, user: User, project: Project) -> ProjectDetail:
    role = projects.role_of(session, user.id, project.id)
    base = _out(project, role, user.is_admin)
    members = [
        MemberOut(user_id=u.id, email=u.email, name=u.name, role=ProjectRole(m.role), since=m.created_at)
        for u, m in projects.members(session, project)
    ]
    return ProjectDetail(**base.model_dump(), members=members)


def _user(session: Session, user_id: uuid.UUID) -> User:
    found = session.get(User, user_id)
    if found is None:
        raise NotFound(f"There is no user {user_id}.")
    return found


@router.get("", response_model=list[ProjectOut], summary="Your projects, with your role")
def list_projects(principal: Reader, session: DbSession) -> list[ProjectOut]:
    return [_out(p, role, False) for p, role in projects.mine(session, principal.user)]


@router.post(
    "",
    response_model=ProjectDetail,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 422),
    summary="Create a project (you become its owner)",
)
def create_project(body: ProjectIn, principal: Writer, session: DbSession) -> ProjectDetail:
    project = projects.create(session, principal.user, body.name, body.slug, body.description)
    return _detail(session, principal.user, project)


@router.post(
    "/join",
    response_model=ProjectDetail,
    responses=problems(404),
    summary="Join a project with its join code (as a member)",
)
def join_project(body: JoinIn, principal: Writer, session: DbSession) -> ProjectDetail:
    project = projects.join(session, principal.user, body.code)
    return _detail(session, principal.user, project)


@router.get(
    "/{slug}", response_model=ProjectDetail, responses=problems(404), summary="One project and its members"
)
def get_project(slug: str, principal: Reader, session: DbSession) -> ProjectDetail:
    return _detail(session, principal.user, projects.by_slug(session, principal.user, slug))


@router.post(
    "/{slug}/members",
    response_model=ProjectDetail,
    responses=problems(403, 404, 409),
    summary="Add a member (managers: viewers and members; owners: any role)",
)
def add_member(slug: str, body: MemberIn, principal: Writer, session: DbSession) -> ProjectDetail:
    project = projects.by_slug(session, principal.user, slug)
    target = user_service.find_by_email(session, body.email)
    if target is None:
        raise NotFound(f"There is no user {body.email}; invite them first.")
    projects.set_member(session, principal.user, project, target, body.role)
    return _detail(session, principal.user, project)


@router.patch(
    "/{slug}/members/{user_id}",
    response_model=ProjectDetail,
    responses=problems(403, 404, 409),
    summary="Change a member's role",
)
def change_member(
    slug: str, user_id: uuid.UUID, body: RoleIn, principal: Writer, session: DbSession
) -> ProjectDetail:
    project = projects.by_slug(session, principal.user, slug)
    target = _user(session, user_id)
    if projects.role_of(session, target.id, project.id) is None:
        raise NotFound(f"{target.email} is no member of project {project.slug!r}.")
    projects.set_member(session, principal.user, project, target, body.role)
    return _detail(session, principal.user, project)


@router.delete(
    "/{slug}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 404, 409),
    summary="Remove a member, or leave (your own id)",
)
def remove_member(slug: str, user_id: uuid.UUID, principal: Writer, session: DbSession) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    projects.remove_member(session, principal.user, project, _user(session, user_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{slug}/join-code",
    response_model=JoinCodeOut,
    responses=problems(403, 404, 409, 422),
    summary="A new join code (the old one stops working)",
)
def new_join_code(slug: str, body: JoinCodeIn, principal: Writer, session: DbSession) -> JoinCodeOut:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    code = projects.new_join_code(session, principal.user, project, body.days)
    assert project.join_code_expires_at is not None
    return JoinCodeOut(code=code, expires_at=project.join_code_expires_at)


@router.delete(
    "/{slug}/join-code",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 404),
    summary="No join code any more",
)
def drop_join_code(slug: str, principal: Writer, session: DbSession) -> Response:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    projects.drop_join_code(session, principal.user, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch(
    "/{slug}",
    response_model=ProjectDetail,
    responses=problems(403, 404),
    summary="Rename, describe, or choose what a job beyond a time quota gets (managers)",
)
def change_project(slug: str, body: ProjectPatch, principal: Writer, session: DbSession) -> ProjectDetail:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    projects.change(session, project, body.name, body.description, body.over_quota)
    return _detail(session, principal.user, project)


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
    used, limit = files.usage(session, settings, project.id)
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
    files.set_limit(session, project, body.limit_bytes)
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
    found = quotas.request_more(
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
    return [QuotaRequestOut.model_validate(r) for r in quotas.requests_of(session, project)]


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
    found = quotas.decide(session, principal.user, project, request_id, decision == "approve", body.note)
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
