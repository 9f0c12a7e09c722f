"""Projects: a lab's groups that share jobs and answer for what they use, their members and roles, and
the one function that decides what a user may do with a project's things (:func:`authorize`).

Roles rank ``viewer`` < ``member`` < ``manager`` < ``owner``; each may do all that the ones below it may
(:data:`NEEDS` says which role each action takes). Admins may do everything everywhere. To a user who is
no member, a project and everything in it does not exist (404), so its name does not leak either.

Every user has a personal project (``personal_user_id``), made when first needed, with nobody else in it:
a submit without a project goes there, and nobody can join it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.engine import keep
from labcloud.db.models import Job, Project, ProjectMember, ProjectRole, User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from labcloud.services import audit, sso_grants

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,38}[a-z0-9])$")
PERSONAL = "personal"  # what a user may call their personal project where a project is asked for
RANK = {ProjectRole.VIEWER: 0, ProjectRole.MEMBER: 1, ProjectRole.MANAGER: 2, ProjectRole.OWNER: 3}
JOIN_CODE_DAYS = 14
MAX_JOIN_CODE_DAYS = 365


class Action(StrEnum):
    READ = "read"  # see the project, its members and its jobs
    RUN = "run"  # submit jobs to it
    MANAGE = "manage"  # members, join codes, anyone's jobs (cancel, delete)
    OWN = "own"  # make or remove managers and owners


NEEDS = {
    Action.READ: ProjectRole.VIEWER,
    Action.RUN: ProjectRole.MEMBER,
    Action.MANAGE: ProjectRole.MANAGER,
    Action.OWN: ProjectRole.OWNER,
}


@dataclass(frozen=True)
class Access:
    """A user's standing in a project: their role (None for an admin who is no member)."""

    project: Project
    role: ProjectRole | None
    admin: bool

    def may(self, action: Action) -> bool:
        return self.admin or (self.role is not None and RANK[self.role] >= RANK[NEEDS[action]])


# --- deciding -------------------------------------------------------------------------------------------


def role_of(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> ProjectRole | None:
    member = session.get(ProjectMember, (project_id, user_id))
    return ProjectRole(member.role) if member is not None else None


def authorize(session: Session, user: User, project: Project, action: Action) -> Access:
    """The user's access to the project if it allows ``action``: NotFound for a non-member (the project
    does not exist for them), Forbidden for a member whose role does not allow it."""
    access = Access(project, role_of(session, user.id, project.id), user.is_admin)
    if access.role is None and not access.admin:
        raise NotFound(f"You have no project {project.slug!r}.")
    if not access.may(action):
        raise Forbidden(
            f"Your role in project {project.slug!r} is {access.role}; this needs {NEEDS[action]} or more."
        )
    return access


def may_see_job(session: Session, user: User, job: Job) -> bool:
    """Its owner, an admin, and anyone with a role in its project see a job."""
    if job.owner_id == user.id or user.is_admin:
        return True
    return role_of(session, user.id, job.project_id) is not None


def authorize_job(session: Session, user: User, job: Job, action: Action) -> None:
    """Whether the user may do ``action`` (READ, or MANAGE: cancel, delete) with the job: its owner may do
    all with their own job, a project's members read its jobs and its managers manage them. NotFound for
    whoever may not see it; Forbidden for whoever sees it but may not change it."""
    if not may_see_job(session, user, job):
        raise NotFound(f"You have no job with id {job.id}.")
    if action == Action.READ or job.owner_id == user.id or user.is_admin:
        return
    project = session.get(Project, job.project_id)
    assert project is not None  # (the foreign key)
    try:
        authorize(session, user, project, action)
    except Forbidden:
        raise Forbidden(
            f"Job {job.id} is another member's; in project {project.slug!r} only managers may change it."
        ) from None


# --- finding --------------------------------------------------------------------------------------------


def personal(session: Session, user: User) -> Project:
    """The user's personal project, made now if they have none yet."""
    found = session.scalar(select(Project).where(Project.personal_user_id == user.id))
    if found is not None:
        return found
    project = Project(
        slug=f"user-{user.id.hex[:12]}",
        name=f"{user.name or user.email} (personal)"[:200],
        personal_user_id=user.id,
    )
    try:
        with session.begin_nested():
            session.add(project)
            session.flush()
            session.add(ProjectMember(project_id=project.id, user_id=user.id, role=ProjectRole.OWNER))
            session.flush()
    except IntegrityError:  # made by a concurrent request a moment ago
        found = session.scalar(select(Project).where(Project.personal_user_id == user.id))
        if found is None:
            raise
        return found
    return project


def by_slug(session: Session, user: User, slug: str, action: Action = Action.READ) -> Project:
    """The project named ``slug`` (``personal``: the user's own) if the user may do ``action`` in it."""
    if slug == PERSONAL:
        return personal(session, user)
    project = session.scalar(select(Project).where(Project.slug == slug.strip().lower()))
    if project is None:
        raise NotFound(f"You have no project {slug[:40]!r}.")
    authorize(session, user, project, action)
    return project


def for_submit(session: Session, user: User, slug: str | None) -> Project:
    """Where a new job of the user goes: the named project (they must be allowed to run jobs in it), or
    their personal one."""
    if not slug:  # (kept: queueing the job and answering its submit look the project up again)
        return keep(session, personal(session, user))
    try:
        return keep(session, by_slug(session, user, slug, Action.RUN))
    except NotFound as exc:
        raise InvalidInput.field(["body", "project"], exc.detail) from None
    except Forbidden as exc:
        raise InvalidInput.field(["body", "project"], exc.detail) from None


def display_names(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """What to call these projects on a page (one query): a shared one by its name, a personal one as its
    user's ("ada@example.org's own")."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(Project.id, Project.name, User.email)
        .outerjoin(User, User.id == Project.personal_user_id)
        .where(Project.id.in_(wanted))
    )
    return {i: f"{email}'s own" if email else name for i, name, email in rows}


def slugs(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The slugs of these projects (one query), to name each job's project in a listing."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.execute(select(Project.id, Project.slug).where(Project.id.in_(wanted)))
    return {project_id: slug for project_id, slug in rows}


def mine(session: Session, user: User) -> list[tuple[Project, ProjectRole]]:
    """The user's projects with their role, personal first, then by name."""
    personal(session, user)
    rows = session.execute(
        select(Project, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == user.id)
    ).all()
    found = [(project, ProjectRole(role)) for project, role in rows]
    return sorted(found, key=lambda r: (r[0].personal_user_id is None, r[0].name.lower()))


def members(session: Session, project: Project) -> list[tuple[User, ProjectMember]]:
    rows = session.execute(
        select(User, ProjectMember)
        .join(ProjectMember, ProjectMember.user_id == User.id)
        .where(ProjectMember.project_id == project.id)
    ).all()
    return sorted(((u, m) for u, m in rows), key=lambda r: (-RANK[ProjectRole(r[1].role)], r[0].email))


# --- changing -------------------------------------------------------------------------------------------


def create(session: Session, user: User, name: str, slug: str | None, description: str = "") -> Project:
    """A new project with its creator as owner."""
    name = name.strip()
    chosen = (slug or _slugify(name)).strip().lower()
    errors = []
    if not 1 <= len(name) <= 200:
        errors.append({"loc": ["body", "name"], "msg": "a name of 1 to 200 characters"})
    if not SLUG.match(chosen) or chosen.startswith("user-") or chosen == PERSONAL:
        errors.append(
            {
                "loc": ["body", "slug"],
                "msg": "3 to 40 lower-case letters, digits and inner hyphens, not 'personal' nor 'user-...'",
            }
        )
    if errors:
        raise InvalidInput("Some fields are not valid.", errors=errors)
    if session.scalar(select(Project.id).where(Project.slug == chosen)) is not None:
        raise Conflict(f"A project with the slug {chosen!r} exists already; choose another.")
    project = Project(slug=chosen, name=name, description=description.strip()[:2000])
    try:
        with session.begin_nested():
            session.add(project)
            session.flush()
    except IntegrityError:
        raise Conflict(f"A project with the slug {chosen!r} exists already; choose another.") from None
    session.add(ProjectMember(project_id=project.id, user_id=user.id, role=ProjectRole.OWNER))
    session.flush()
    return project


def change(
    session: Session, project: Project, name: str | None, description: str | None, over_quota: str | None
) -> Project:
    """Rename or describe the project, or choose what a job beyond a time quota gets (the caller has
    checked the actor may manage it)."""
    if name is not None:
        if not 1 <= len(name.strip()) <= 200:
            raise InvalidInput.field(["body", "name"], "a name of 1 to 200 characters")
        project.name = name.strip()
    if description is not None:
        project.description = description.strip()[:2000]
    if over_quota is not None:
        project.over_quota = over_quota
    session.flush()
    return project


def _slugify(name: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")[:40].strip("-")


def set_member(
    session: Session, actor: User, project: Project, target: User, role: ProjectRole
) -> ProjectMember:
    """Add ``target`` to the project, or change their role. Managers add and change viewers and members;
    only owners make (or unmake) managers and owners; a project keeps at least one owner."""
    if project.personal_user_id is not None:
        raise Conflict("A personal project has no other members; create a project to share work.")
    access = authorize(session, actor, project, Action.MANAGE)
    current = session.get(ProjectMember, (project.id, target.id))
    high = {ProjectRole.MANAGER, ProjectRole.OWNER}
    touches_high = role in high or (current is not None and ProjectRole(current.role) in high)
    if touches_high and not access.may(Action.OWN):
        raise Forbidden("Only the project's owners make or change managers and owners.")
    was = None if current is None else ProjectRole(current.role).value
    sso_grants.forget(session, target.id, project_id=project.id)  # (given by hand now)
    if current is None:
        current = ProjectMember(project_id=project.id, user_id=target.id, role=role)
        session.add(current)
    else:
        if ProjectRole(current.role) == ProjectRole.OWNER and role != ProjectRole.OWNER:
            _keep_an_owner(session, project, target)
        current.role = role
    session.flush()
    if was != ProjectRole(role).value:
        details = {
            "project": project.slug,
            "member": target.email,
            "from": was,
            "to": ProjectRole(role).value,
        }
        audit.record(session, "project.role_changed", "project", project.id, details)
    return current


def remove_member(session: Session, actor: User, project: Project, target: User) -> None:
    """Take ``target`` out of the project: managers remove viewers and members, owners anyone, and anyone
    may leave; a project keeps at least one owner. Their jobs stay in the project."""
    current = session.get(ProjectMember, (project.id, target.id))
    high = (ProjectRole.MANAGER, ProjectRole.OWNER)
    if actor.id != target.id:
        access = authorize(session, actor, project, Action.MANAGE)
        if current is not None and ProjectRole(current.role) in high and not access.may(Action.OWN):
            raise Forbidden("Only the project's owners remove managers and owners.")
    elif current is None:
        raise NotFound(f"You have no project {project.slug!r}.")
    if current is None:
        raise NotFound(f"{target.email} is no member of project {project.slug!r}.")
    if project.personal_user_id is not None:
        raise Conflict("Nobody leaves their personal project.")
    if ProjectRole(current.role) == ProjectRole.OWNER:
        _keep_an_owner(session, project, target)
    details = {"project": project.slug, "member": target.email, "from": ProjectRole(current.role).value}
    sso_grants.forget(session, target.id, project_id=project.id)  # (taken by hand)
    session.delete(current)
    session.flush()
    audit.record(session, "project.member_removed", "project", project.id, details)


def _keep_an_owner(session: Session, project: Project, leaving: User) -> None:
    others = session.scalars(
        select(ProjectMember.user_id).where(
            ProjectMember.project_id == project.id,
            ProjectMember.role == ProjectRole.OWNER,
            ProjectMember.user_id != leaving.id,
        )
    ).first()
    if others is None:
        raise Conflict(f"Project {project.slug!r} needs an owner: make someone else owner first.")


def new_join_code(session: Session, actor: User, project: Project, days: int = JOIN_CODE_DAYS) -> str:
    """A fresh join code (the previous one stops working), valid for ``days``; shown once."""
    if project.personal_user_id is not None:
        raise Conflict("Nobody joins a personal project.")
    authorize(session, actor, project, Action.MANAGE)
    if not 1 <= days <= MAX_JOIN_CODE_DAYS:
        raise InvalidInput.field(["body", "days"], f"from 1 to {MAX_JOIN_CODE_DAYS} days")
    code = f"{project.slug}-{secrets.token_urlsafe(12)}"
    project.join_code_hash = _code_hash(code)
    project.join_code_expires_at = utcnow() + timedelta(days=days)
    session.flush()
    return code


def drop_join_code(session: Session, actor: User, project: Project) -> None:
    authorize(session, actor, project, Action.MANAGE)
    project.join_code_hash = None
    project.join_code_expires_at = None
    session.flush()


def join(session: Session, user: User, code: str) -> Project:
    """Join the project whose current code this is, as a member (a member already keeps their role)."""
    project = session.scalar(select(Project).where(Project.join_code_hash == _code_hash(code.strip())))
    expires = project.join_code_expires_at if project is not None else None
    if project is None or expires is None or expires <= utcnow():
        raise NotFound(
            "That join code is not valid (it may have expired or been replaced); ask for a new one."
        )
    if session.get(ProjectMember, (project.id, user.id)) is None:
        session.add(ProjectMember(project_id=project.id, user_id=user.id, role=ProjectRole.MEMBER))
        session.flush()
    return project


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
