"""Projects: yours with your role, create one, join one with a code; a project's page with its members,
and for its managers adding members, changing roles, removing members and join codes (shown once).

What each role may do is :mod:`labcloud.services.projects`'s to decide: the page offers the controls the
user's access allows, and the service refuses anything else. A project you have no role in is not found.
The page's quotas, quota requests, usage and settings are :mod:`.project_budget`'s forms.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from sqlalchemy.orm import Session

from labcloud.db.models import Project, ProjectRole, User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, Forbidden, InvalidInput, LabcloudError, NotFound
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import projects, users
from labcloud.services.projects import Action
from labcloud.web import budget
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
ROLES = [r.value for r in sorted(ProjectRole, key=lambda r: projects.RANK[r])]


def back(ctx: Runtime, url: str, message: str, kind: str = "ok") -> Response:
    """After a form: to ``url`` (post/redirect/get), with a message for the page there."""
    response = redirect(url)
    web_session.flash(response, ctx.settings, message, kind)
    return response


def field_errors(exc: LabcloudError, default: str) -> dict[str, str]:
    """Each of the service's ``{loc, msg}`` under its field's name (all of them at once); an error that
    names no field goes to ``default``."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors or [{"loc": [], "msg": exc.detail}]:
        loc = [str(p) for p in error.get("loc", [])]
        errors.setdefault(loc[-1] if len(loc) > 1 else default, []).append(str(error.get("msg", exc.detail)))
    return {key: "; ".join(messages) for key, messages in errors.items()}


# --------------------------------------------------------------------------------------- your projects


def _list_page(request: Request, session: Session, user: User, status: int = 200, **extra: Any) -> Response:
    context: dict[str, Any] = {
        "projects": projects.mine(session, user),
        "errors": {},
        "join_errors": {},
        "join_code": "",
        "form": {},
        **extra,
    }
    return render(request, "projects.html", context, status)


@router.get("/projects")
def project_list(request: Request, principal: PageUser, session: DbSession) -> Response:
    return _list_page(request, session, principal.user)


@router.post("/projects")
def create(
    request: Request,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=1000)] = "",
    slug: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    try:
        project = projects.create(session, principal.user, name, slug.strip() or None, description)
    except (InvalidInput, Conflict) as exc:
        errors = field_errors(exc, "slug")  # (a Conflict is a slug that is taken)
        form = {"name": name, "slug": slug, "description": description}
        return _list_page(request, session, principal.user, exc.status, errors=errors, form=form)
    return back(ctx, f"/projects/{project.slug}", f"Project {project.name} is created; you are its owner.")


@router.post("/projects/join")
def join(
    request: Request,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    code: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        if not code.strip():
            raise InvalidInput.field(
                ["body", "code"], "paste the join code a manager of the project gave you"
            )
        project = projects.join(session, principal.user, code)
    except (InvalidInput, NotFound) as exc:
        errors = {"code": exc.detail}
        return _list_page(request, session, principal.user, exc.status, join_errors=errors, join_code=code)
    return back(ctx, f"/projects/{project.slug}", f"You are a member of {project.name}.")


# ------------------------------------------------------------------------------------------ one project


def show_project(
    request: Request,
    session: Session,
    user: User,
    project: Project,
    status: int = 200,
    usage: tuple[str, int] = (budget.USAGE_GROUPS[0], budget.DEFAULT_MONTHS),
    **extra: Any,
) -> Response:
    """The project's page; ``usage``: the usage report's grouping and months; ``extra``: what a form that
    failed puts back (its values and errors)."""
    access = projects.authorize(session, user, project, Action.READ)
    settings = request.app.state.ctx.settings
    owns = access.may(Action.OWN)
    # The roles the page offers this user to give or take away (managers: viewers and members; owners:
    # any); set_member and remove_member decide, this only leaves out controls that they would refuse.
    below_managers = [r for r in ROLES if projects.RANK[ProjectRole(r)] < projects.RANK[ProjectRole.MANAGER]]
    assignable = ROLES if owns else below_managers
    expires = project.join_code_expires_at
    context: dict[str, Any] = {
        "project": project,
        "personal": project.personal_user_id is not None,
        "role": access.role,
        "manages": access.may(Action.MANAGE),
        "assignable": assignable,
        "members": projects.members(session, project),
        "code_expired": expires is not None and expires <= utcnow(),
        "join_days": projects.JOIN_CODE_DAYS,
        "max_join_days": projects.MAX_JOIN_CODE_DAYS,
        "created_code": None,
        "errors": {},
        "form": {},
        **budget.page_context(session, settings, project, access, utcnow(), *usage),
        **extra,
    }
    return render(request, "project.html", context, status)


@router.get("/projects/{slug}")
def project_page(
    request: Request,
    slug: str,
    principal: PageUser,
    session: DbSession,
    by: Annotated[str, Query(max_length=20)] = budget.USAGE_GROUPS[0],
    months: Annotated[str, Query(max_length=4)] = str(budget.DEFAULT_MONTHS),
) -> Response:
    """``by`` and ``months`` choose the usage report: grouped per user, app, month or executor, over the
    last months."""
    project = projects.by_slug(session, principal.user, slug)
    usage = budget.usage_choice(by, months)
    return show_project(request, session, principal.user, project, usage=usage)


def _a(role: str) -> str:
    return f"{'an' if role == ProjectRole.OWNER else 'a'} {role}"


def _role(value: str) -> ProjectRole:
    if value not in ROLES:
        raise InvalidInput.field(["body", "role"], f"one of: {', '.join(ROLES)}")
    return ProjectRole(value)


@router.post("/projects/{slug}/members")
def add_member(
    request: Request,
    slug: str,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=1000)] = "",
    role: Annotated[str, Form(max_length=20)] = ProjectRole.MEMBER.value,
) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    try:
        target = users.find_by_email(session, email) if email.strip() else None
        if target is None:
            raise InvalidInput.field(
                ["body", "email"],
                f"there is no user {email.strip()!r}; an administrator invites them first"
                if email.strip()
                else "the email of the person to add",
            )
        projects.set_member(session, principal.user, project, target, _role(role))
    except (InvalidInput, Forbidden, Conflict) as exc:
        errors = field_errors(exc, "role" if isinstance(exc, Forbidden) else "email")
        form = {"email": email, "role": role}
        return show_project(request, session, principal.user, project, exc.status, errors=errors, form=form)
    return back(ctx, f"/projects/{project.slug}", f"{target.email} is now {_a(role)} of {project.name}.")


def _member(session: Session, project: Project, user_id: uuid.UUID) -> User:
    target = users.get_user(session, user_id)
    if projects.role_of(session, target.id, project.id) is None:
        raise NotFound(f"{target.email} is no member of project {project.slug!r}.")
    return target


@router.post("/projects/{slug}/members/{user_id}")
def change_role(
    slug: str,
    user_id: uuid.UUID,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    role: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    target = _member(session, project, user_id)
    here = f"/projects/{project.slug}"
    try:
        projects.set_member(session, principal.user, project, target, _role(role))
    except (InvalidInput, Forbidden, Conflict) as exc:
        return back(ctx, here, exc.detail, "bad")
    return back(ctx, here, f"{target.email} is now {_a(role)}.")


@router.post("/projects/{slug}/members/{user_id}/remove")
def remove_member(
    slug: str, user_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx
) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    target = _member(session, project, user_id)
    here = f"/projects/{project.slug}"
    try:
        projects.remove_member(session, principal.user, project, target)
    except (Forbidden, Conflict) as exc:
        return back(ctx, here, exc.detail, "bad")
    return back(ctx, here, f"{target.email} is no longer a member; their jobs stay.")


@router.post("/projects/{slug}/leave")
def leave(slug: str, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    try:
        projects.remove_member(session, principal.user, project, principal.user)
    except Conflict as exc:
        return back(ctx, f"/projects/{project.slug}", exc.detail, "bad")
    return back(ctx, "/projects", f"You left {project.name}; your jobs there stay in it.")


@router.post("/projects/{slug}/join-code")
def new_join_code(
    request: Request,
    slug: str,
    principal: FormUser,
    session: DbSession,
    days: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Rendered directly (not redirected) so that the code is shown once and never lands in a URL."""
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    try:
        chosen = int(days) if days.strip() else projects.JOIN_CODE_DAYS
    except ValueError:
        chosen = 0  # the service says what it takes
    try:
        code = projects.new_join_code(session, principal.user, project, chosen)
    except (InvalidInput, Conflict) as exc:
        errors = field_errors(exc, "days")
        form = {"days": days}
        return show_project(request, session, principal.user, project, exc.status, errors=errors, form=form)
    return show_project(request, session, principal.user, project, 201, created_code=code)


@router.post("/projects/{slug}/join-code/remove")
def drop_join_code(slug: str, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    projects.drop_join_code(session, principal.user, project)
    return back(ctx, f"/projects/{project.slug}", "The join code no longer works.")
