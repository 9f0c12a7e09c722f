"""Webhooks in the browser: your subscriptions (and, for a project's managers, those you made for the
project's events), a form to add one (its signing secret shown once, with a copy button), pause, resume and
delete; a subscription's page with every delivery and each try's answer, "Send test" and "Redeliver".

The rules (which URLs and events, who may subscribe to a project's events, what a redelivery does) are
:mod:`labcloud.services.webhooks`'s; a form that fails comes back with each of its errors next to its
field and what was typed kept. Another user's webhook is not found.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy.orm import Session

from labcloud.db.models import Project, User, WebhookDelivery, WebhookSubscription
from labcloud.errors import InvalidInput
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import projects, webhooks
from labcloud.services.projects import Action
from labcloud.settings import Settings
from labcloud.web.deps import FormUser, PageRoute, PageUser
from labcloud.web.rendering import render
from labcloud.web.routes.projects import back, field_errors

router = APIRouter(route_class=PageRoute, include_in_schema=False)
MINE = "/account/webhooks"


def _list_url(slug: str | None) -> str:
    return f"/projects/{slug}/webhooks" if slug else MINE


def _managed(session: Session, user: User) -> list[tuple[str, str]]:
    """(slug, name) of the shared projects whose events the user may subscribe to."""
    return [
        (project.slug, project.name)
        for project, role in projects.mine(session, user)
        if project.personal_user_id is None
        and projects.Access(project, role, user.is_admin).may(Action.MANAGE)
    ]


def _list_page(
    request: Request,
    session: Session,
    settings: Settings,
    user: User,
    project: Project | None,
    status: int = 200,
    **extra: Any,
) -> Response:
    """Your webhooks (``project``: only those for that project's events, which you manage)."""
    found = webhooks.mine(session, user)
    if project is not None:
        found = [sub for sub in found if sub.project_id == project.id]
    slugs = projects.slugs(session, [sub.project_id for sub in found if sub.project_id is not None])
    context: dict[str, Any] = {
        "project": project,
        "subscriptions": found,
        "slugs": slugs,
        "last_errors": webhooks.last_errors(session, found),
        "events": webhooks.EVENTS,
        "projects": [] if project is not None else _managed(session, user),
        "allow_private": settings.webhook_allow_private,
        "max_subscriptions": webhooks.MAX_SUBSCRIPTIONS,
        "errors": {},
        "form": {},
        "created": None,
        **extra,
    }
    return render(request, "webhooks.html", context, status)


def _create(
    request: Request,
    session: Session,
    ctx: Ctx,
    user: User,
    project: Project | None,
    url: str,
    events: list[str],
    project_slug: str,
) -> Response:
    """Rendered directly (not redirected) so that the secret is shown once and never lands in a URL."""
    try:
        found = webhooks.subscribe(session, ctx.settings, user, url.strip(), events, project_slug or None)
    except InvalidInput as exc:
        form = {"url": url, "events": events, "project": project_slug}
        errors = field_errors(exc, "form")
        return _list_page(request, session, ctx.settings, user, project, exc.status, errors=errors, form=form)
    return _list_page(request, session, ctx.settings, user, project, 201, created=found)


@router.get(MINE)
def my_webhooks(request: Request, principal: PageUser, session: DbSession, ctx: Ctx) -> Response:
    return _list_page(request, session, ctx.settings, principal.user, None)


@router.post(MINE)
def add_mine(
    request: Request,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    url: Annotated[str, Form(max_length=2000)] = "",
    events: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults (the body is bounded)
    project: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Your jobs' events, or (as one of its managers) a project's chosen in the form."""
    return _create(request, session, ctx, principal.user, None, url, events, project.strip())


@router.get("/projects/{slug}/webhooks")
def project_webhooks(
    request: Request, slug: str, principal: PageUser, session: DbSession, ctx: Ctx
) -> Response:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    return _list_page(request, session, ctx.settings, principal.user, project)


@router.post("/projects/{slug}/webhooks")
def add_for_project(
    request: Request,
    slug: str,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    url: Annotated[str, Form(max_length=2000)] = "",
    events: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults (the body is bounded)
) -> Response:
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    return _create(request, session, ctx, principal.user, project, url, events, project.slug)


# ---------------------------------------------------------------------------------------- one webhook


def _tries(delivery: WebhookDelivery) -> list[dict[str, Any]]:
    """Each try's time (as a datetime, for the page's clock), status and error, oldest first."""
    shown = []
    for one in delivery.tries:
        at = one.get("at")
        shown.append(
            {
                "at": datetime.fromisoformat(at) if isinstance(at, str) else None,
                "status": one.get("status"),
                "error": one.get("error") or "",
            }
        )
    return shown


def _deliveries(session: Session, found: WebhookSubscription) -> dict[str, Any]:
    rows = [
        {"delivery": delivery, "kind": kind, "tries": _tries(delivery)}
        for delivery, kind in webhooks.deliveries_with_kinds(session, found)
    ]
    return {"webhook": found, "deliveries": rows}


def _slug(session: Session, found: WebhookSubscription) -> str | None:
    if found.project_id is None:
        return None
    return projects.slugs(session, [found.project_id]).get(found.project_id)


@router.get(MINE + "/{webhook_id}")
def webhook_page(
    request: Request, webhook_id: uuid.UUID, principal: PageUser, session: DbSession
) -> Response:
    found = webhooks.get(session, principal.user, webhook_id)
    context = {
        **_deliveries(session, found),
        "slug": _slug(session, found),
        "last_error": webhooks.last_errors(session, [found]).get(found.id),
    }
    return render(request, "webhook.html", context)


@router.get(MINE + "/{webhook_id}/deliveries")
def delivery_rows(
    request: Request, webhook_id: uuid.UUID, principal: PageUser, session: DbSession
) -> Response:
    """The deliveries table alone, which the page polls."""
    found = webhooks.get(session, principal.user, webhook_id)
    return render(request, "partials/webhook_deliveries.html", _deliveries(session, found))


@router.post(MINE + "/{webhook_id}/pause")
def pause(webhook_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    found = webhooks.change(session, webhooks.get(session, principal.user, webhook_id), None, False)
    return back(ctx, f"{MINE}/{found.id}", "The webhook is paused: it hears of no events until resumed.")


@router.post(MINE + "/{webhook_id}/resume")
def resume(webhook_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    found = webhooks.change(session, webhooks.get(session, principal.user, webhook_id), None, True)
    return back(ctx, f"{MINE}/{found.id}", "The webhook is active again.")


@router.post(MINE + "/{webhook_id}/delete")
def delete(webhook_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    found = webhooks.get(session, principal.user, webhook_id)
    where = _list_url(_slug(session, found))
    session.delete(found)
    return back(ctx, where, "The webhook is deleted; its deliveries are gone with it.")


@router.post(MINE + "/{webhook_id}/test")
def send_test(webhook_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    found = webhooks.get(session, principal.user, webhook_id)
    webhooks.send_test(session, found)
    return back(
        ctx, f"{MINE}/{found.id}", f"A {webhooks.TEST_EVENT} event is on its way; its delivery shows below."
    )


@router.post(MINE + "/{webhook_id}/deliveries/{delivery_id}/redeliver")
def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx
) -> Response:
    found = webhooks.get(session, principal.user, webhook_id)
    webhooks.redeliver(session, found, delivery_id)
    return back(ctx, f"{MINE}/{found.id}", "The delivery is being sent again; its new try shows below.")
