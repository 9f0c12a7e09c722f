"""Administration: users (invite, deactivate, promote), every user's jobs (the queue, with why each job
waits, and cancel), remote workers (register, drain, revoke) and the app registry's health."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request, Response
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.errors import Conflict, InvalidInput
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import sso_accounts, users
from labcloud.services import workers as worker_service
from labcloud.settings import Settings
from labcloud.web import session as web_session
from labcloud.web.deps import AdminForm, AdminPage, PageRoute, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
log = logging.getLogger(__name__)


def _users_page(
    request: Request, session: Any, q: str, cursor: str | None, status: int = 200, **extra: Any
) -> Response:
    page = users.list_users(session, limit=100, cursor=cursor, search=q or None)
    context: dict[str, Any] = {
        "users": page.items,
        "next_cursor": page.next_cursor,
        "q": q,
        "invited": None,
        "errors": {},
    }
    return render(request, "admin_users.html", {**context, **extra}, status)


@router.get("/admin/users")
def user_list(
    request: Request, _admin: AdminPage, session: DbSession, q: str = "", cursor: str | None = None
) -> Response:
    return _users_page(request, session, q, cursor)


@router.post("/admin/users")
def invite(
    request: Request,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    is_admin: Annotated[bool, Form()] = False,
) -> Response:
    """The password is generated and shown once, to hand to the new user (as the API does)."""
    password = security.generate_password()
    try:
        user = users.create_user(
            session, ctx.settings, email=email, password=password, name=name, is_admin=is_admin, issued=True
        )
    except (InvalidInput, Conflict) as exc:
        form = {"email": email, "name": name, "is_admin": is_admin}
        return _users_page(request, session, "", None, exc.status, errors={"email": exc.detail}, form=form)
    session.flush()
    return _users_page(request, session, "", None, 201, invited={"user": user, "password": password})


@router.post("/admin/users/{user_id}")
def update(
    user_id: uuid.UUID,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    action: Annotated[str, Form(max_length=20)],
) -> Response:
    changes: dict[str, dict[str, Any]] = {
        "activate": {"is_active": True},
        "deactivate": {"is_active": False},
        "promote": {"is_admin": True},
        "demote": {"is_admin": False},
    }
    if action not in changes:
        raise InvalidInput.field(["body", "action"], f"unknown action; one of: {', '.join(changes)}")
    user = users.get_user(session, user_id)
    response = redirect("/admin/users")
    try:
        users.admin_update(session, ctx.settings, user, **changes[action])
    except Conflict as exc:
        web_session.flash(response, ctx.settings, exc.detail, "bad")
        return response
    web_session.flash(response, ctx.settings, f"{user.email}: {action}d.")
    return response


@router.get("/admin/apps")
def registry_status(request: Request, _admin: AdminPage, ctx: Ctx) -> Response:
    snapshot = ctx.apps.snapshot()
    return render(
        request,
        "admin_apps.html",
        {
            "apps": list(snapshot.apps.values()),
            "sources": snapshot.sources,
            "problems": snapshot.problems,
            "dirs": ctx.apps.dirs,
        },
    )


# ------------------------------------------------------------------------------------------ workers

WORKERS_PAGE_SIZE = 100


def _parse_labels(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines skipped) into labels; the service checks their lengths."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput.field(["body", "labels"], f"line {number}: write labels as key=value")
        labels[key.strip()] = value.strip()
    return labels


def _field_of(exc: InvalidInput | Conflict) -> str:
    """The form field an error is about: the one the service names, else the name."""
    loc = (exc.errors or [{}])[0].get("loc", [])
    return next((f for f in ("labels", "location", "description") if f in loc), "name")


def _workers_context(session: Session, ctx: Runtime, cursor: str | None) -> dict[str, Any]:
    page = worker_service.list_workers(session, limit=WORKERS_PAGE_SIZE, cursor=cursor)
    running = worker_service.running_jobs(session, [w.id for w in page.items])
    return {
        "workers": [
            {"worker": w, "state": worker_service.state_of(w, ctx.settings), "running": running.get(w.id, [])}
            for w in page.items
        ],
        "next_cursor": page.next_cursor,
        "cursor": cursor,
    }


def _workers_page(
    request: Request, session: Session, ctx: Runtime, cursor: str | None, status: int = 200, **extra: Any
) -> Response:
    context = {**_workers_context(session, ctx, cursor), "registered": None, "errors": {}, "form": {}}
    return render(request, "admin_workers.html", {**context, **extra}, status)


@router.get("/admin/workers")
def worker_list(
    request: Request, _admin: AdminPage, session: DbSession, ctx: Ctx, cursor: str | None = None
) -> Response:
    return _workers_page(request, session, ctx, cursor)


@router.get("/admin/workers/rows")
def worker_rows(
    request: Request, _admin: AdminPage, session: DbSession, ctx: Ctx, cursor: str | None = None
) -> Response:
    """The table alone, polled by the page (states, heartbeats and running jobs change by themselves)."""
    return render(request, "partials/worker_table.html", _workers_context(session, ctx, cursor))


@router.post("/admin/workers")
def register_worker(
    request: Request,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=1000)] = "",
    labels: Annotated[str, Form(max_length=20_000)] = "",
    location: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """Rendered directly (not redirected) so that the token is shown once and never lands in a URL."""
    form = {"name": name, "labels": labels, "location": location, "description": description}
    try:
        worker, token = worker_service.register(
            session, name, _parse_labels(labels), location=location, description=description
        )
    except (InvalidInput, Conflict) as exc:
        return _workers_page(
            request, session, ctx, None, exc.status, errors={_field_of(exc): exc.detail}, form=form
        )
    session.flush()
    server = (ctx.settings.base_url or str(request.base_url)).rstrip("/")
    registered = {
        "worker": worker,
        "token": token,
        "command": f"LABCLOUD_WORKER_TOKEN={token} labcloud worker --server {server}",
    }
    return _workers_page(request, session, ctx, None, 201, registered=registered)


@router.post("/admin/workers/{worker_id}/drain")
def drain_worker(worker_id: uuid.UUID, _admin: AdminForm, session: DbSession, ctx: Ctx) -> Response:
    response = redirect("/admin/workers")
    worker = worker_service.get(session, worker_id)
    try:
        worker_service.drain(session, worker)
    except Conflict as exc:
        web_session.flash(response, ctx.settings, exc.detail, "bad")
        return response
    web_session.flash(
        response, ctx.settings, f"{worker.name} is draining: it finishes its jobs and takes no more."
    )
    return response


@router.post("/admin/workers/{worker_id}/revoke")
def revoke_worker(worker_id: uuid.UUID, _admin: AdminForm, session: DbSession, ctx: Ctx) -> Response:
    worker = ctx.revoke_worker(session, worker_id)  # its jobs are queued again
    response = redirect("/admin/workers")
    web_session.flash(response, ctx.settings, f"{worker.name} is revoked: its token no longer works.")
    return response


# ------------------------------------------------------------------------------------------- one user


def _user_page(
    request: Request, session: Session, ctx: Runtime, user_id: uuid.UUID, **extra: Any
) -> Response:
    user = users.get_user(session, user_id)
    status = extra.pop("status", 200)
    context = {
        "who": user,
        "default_limit": ctx.settings.storage_quota_bytes,
        "mail": bool(ctx.settings.smtp_url),
        "errors": {},
        "issued": None,
        "min_password_length": ctx.settings.min_password_length,
        "identities": sso_accounts.identities(session, user),
        **extra,
    }
    return render(request, "admin_user.html", context, status)


@router.get("/admin/users/{user_id}")
def user_page(
    request: Request, user_id: uuid.UUID, _admin: AdminPage, session: DbSession, ctx: Ctx
) -> Response:
    return _user_page(request, session, ctx, user_id)


def _said(exc: InvalidInput) -> str:
    return str((exc.errors or [{"msg": exc.detail}])[0].get("msg", exc.detail))


def _megabytes(text: str) -> int | None:
    """The storage limit field: empty for the installation's default, 0 for none, else megabytes."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput.field(["storage_limit"], "a number of megabytes, 0 for no limit") from None
    if value < 0 or value > 2**43:
        raise InvalidInput.field(["storage_limit"], "from 0 (no limit) up to 8 EB")
    return int(value * 1024 * 1024)


@router.post("/admin/users/{user_id}/profile")
def update_profile(
    request: Request,
    user_id: uuid.UUID,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=200)] = "",
    storage_limit: Annotated[str, Form(max_length=30)] = "",
) -> Response:
    user = users.get_user(session, user_id)
    try:
        limit = _megabytes(storage_limit)
    except InvalidInput as exc:
        form = {"name": name, "storage_limit": storage_limit}
        return _user_page(
            request, session, ctx, user_id, status=422, errors={"storage_limit": _said(exc)}, form=form
        )
    users.admin_update(session, ctx.settings, user, name=name)
    users.set_storage_limit(user, limit)
    response = redirect(f"/admin/users/{user_id}")
    web_session.flash(response, ctx.settings, f"{user.email}: name and storage limit saved.")
    return response


@router.post("/admin/users/{user_id}/password")
def reset_password(
    request: Request,
    user_id: uuid.UUID,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    background: BackgroundTasks,
    how: Annotated[str, Form(max_length=10)] = "generate",
) -> Response:
    """A new password shown once (to hand over; the user chooses their own at their next login), or, where
    the installation sends mail, a link that lets them choose one."""
    user = users.get_user(session, user_id)
    if how == "mail" and ctx.settings.smtp_url:
        mail = users.password_mail(ctx.settings, user, invitation=False)
        background.add_task(_send_link, mail, ctx.settings)
        response = redirect(f"/admin/users/{user_id}")
        web_session.flash(
            response, ctx.settings, f"A link to choose a new password is on its way to {user.email}."
        )
        return response
    password = security.generate_password()
    users.admin_update(session, ctx.settings, user, password=password)
    return _user_page(request, session, ctx, user_id, issued=password)


def _send_link(mail: users.LinkMail, settings: Settings) -> None:
    try:
        mail.send(settings)
    except Exception as exc:  # (logged: the admin can send another)
        log.warning("password mail to %s not sent: %s", mail.to, exc)


@router.post("/admin/users/{user_id}/sso-identities/{identity_id}/unlink")
def unlink_identity(
    user_id: uuid.UUID, identity_id: uuid.UUID, _admin: AdminForm, session: DbSession, ctx: Ctx
) -> Response:
    """Its logins no longer reach this account (until it links again by the rules of a first login)."""
    user = users.get_user(session, user_id)
    identity = sso_accounts.unlink(session, user, identity_id)
    response = redirect(f"/admin/users/{user_id}")
    web_session.flash(
        response, ctx.settings, f"{user.email}: the identity at {identity.provider} is unlinked."
    )
    return response
