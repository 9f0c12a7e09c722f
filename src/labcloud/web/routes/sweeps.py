"""Parameter sweeps in the browser: the list, a sweep's page (its progress rolled up, live until every job
has ended, and a page of its jobs) and cancel-all. A sweep is submitted through the API, the CLI
(``labcloud sweep submit``) or the Python client."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from labcloud.errors import Forbidden, NotFound
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import projects, sweeps
from labcloud.services.job_states import JobState
from labcloud.services.tokens import Principal
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
ENDED = {"succeeded", "failed", "cancelled", "partial"}
PAGE = 100


@router.get("/sweeps")
def sweep_list(request: Request, principal: PageUser, session: DbSession) -> Response:
    page = sweeps.list_sweeps(session, principal.user, None, limit=100, cursor=None)
    counts = sweeps.counts_of(session, [g.id for g in page.items])
    rows = [sweeps.view(g, counts[g.id]) for g in page.items]
    return render(request, "sweeps.html", {"sweeps": rows})


def _context(
    session: Session, principal: Principal, group_id: uuid.UUID, state: str | None, cursor: str | None
) -> dict[str, Any]:
    group = sweeps.get(session, principal.user, group_id)
    seen = sweeps.view_one(session, group)
    states = [JobState(state)] if state in {s.value for s in JobState} else []
    jobs = sweeps.jobs_page(session, group, limit=PAGE, cursor=cursor, states=states)
    ended = sum(n for s, n in seen.counts.items() if s in ("succeeded", "failed", "cancelled"))
    return {
        "group": group,
        "view": seen,
        "ended": ended,
        "live": seen.state not in ENDED,
        "jobs": jobs,
        "state": states[0].value if states else "",
        "project": projects.slugs(session, [group.project_id]).get(group.project_id, ""),
        "cancellable": any(s in seen.counts for s in ("queued", "staging", "running", "finishing")),
    }


@router.get("/sweeps/{group_id}")
def sweep_page(
    request: Request,
    group_id: uuid.UUID,
    principal: PageUser,
    session: DbSession,
    state: str | None = Query(None, max_length=16),
    cursor: str | None = Query(None, max_length=200),
) -> Response:
    return render(request, "sweep.html", _context(session, principal, group_id, state, cursor))


@router.get("/sweeps/{group_id}/progress")
def sweep_progress(
    request: Request, group_id: uuid.UUID, principal: PageUser, session: DbSession
) -> Response:
    """The progress alone, polled by the page until every job has ended."""
    return render(request, "partials/sweep_progress.html", _context(session, principal, group_id, None, None))


@router.post("/sweeps/{group_id}/cancel")
def cancel_sweep(group_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    response = redirect(f"/sweeps/{group_id}")
    try:
        ctx.cancel_sweep(session, principal.user, group_id)
    except (Forbidden, NotFound) as exc:
        session.rollback()
        web_session.flash(response, ctx.settings, exc.detail, "bad")
    else:
        web_session.flash(response, ctx.settings, "Cancel requested for every job that had not ended.")
    return response
