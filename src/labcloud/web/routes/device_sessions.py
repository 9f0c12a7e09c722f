"""Sessions across devices in the browser: the list, a session's page (each device's part, live until every
part has ended) and cancel-all. A session is started from an app's run form by choosing devices."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from labcloud.errors import Forbidden, NotFound
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import device_sessions, projects
from labcloud.services.tokens import Principal
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
ENDED = {"succeeded", "failed", "cancelled", "partial"}


@router.get("/sessions")
def session_list(request: Request, principal: PageUser, session: DbSession) -> Response:
    page = device_sessions.list_sessions(session, principal.user, None, limit=100, cursor=None)
    rows = [device_sessions.view(session, g) for g in page.items]
    return render(request, "sessions.html", {"sessions": rows})


def _context(session: Session, principal: Principal, ctx: Runtime, group_id: uuid.UUID) -> dict[str, Any]:
    group = device_sessions.get(session, principal.user, group_id)
    seen = device_sessions.view(session, group)
    return {
        "group": group,
        "view": seen,
        "live": seen.state not in ENDED,
        "messages": {m.job.id: ctx.message(m.job) for m in seen.members},
        "project": projects.slugs(session, [group.project_id]).get(group.project_id, ""),
        "cancellable": any(m.job.state in ("queued", "staging", "running") for m in seen.members),
    }


@router.get("/sessions/{group_id}")
def session_page(
    request: Request, group_id: uuid.UUID, principal: PageUser, session: DbSession, ctx: Ctx
) -> Response:
    return render(request, "session.html", _context(session, principal, ctx, group_id))


@router.get("/sessions/{group_id}/parts")
def session_parts(
    request: Request, group_id: uuid.UUID, principal: PageUser, session: DbSession, ctx: Ctx
) -> Response:
    """The devices' table alone, polled by the page until every part has ended."""
    return render(request, "partials/session_parts.html", _context(session, principal, ctx, group_id))


@router.post("/sessions/{group_id}/cancel")
def cancel_session(group_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    response = redirect(f"/sessions/{group_id}")
    try:
        ctx.cancel_session(session, principal.user, group_id)
    except (Forbidden, NotFound) as exc:
        session.rollback()
        web_session.flash(response, ctx.settings, exc.detail, "bad")
    else:
        web_session.flash(response, ctx.settings, "Cancel requested for every part that had not ended.")
    return response
