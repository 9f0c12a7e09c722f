"""Projects: yours with your role, create one, read one with its members, add and change members, join
codes, join by code, leave. The rules are :mod:`labcloud.services.projects`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy.orm import Session

from labcloud.api.deps import DbSession, Reader, Writer
from labcloud.api.openapi import problems
from labcloud.db.models import Project, ProjectRole, User
from labcloud.errors import NotFound
from labcloud.http.guard import GuardedRoute
from labcloud.services import projects
from labcloud.services import users as user_service
from labcloud.services.projects import Action

router = APIRouter(prefix="/api/v1/projects", tags=["projects"], route_class=GuardedRoute)


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
