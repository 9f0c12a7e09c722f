"""The dashboard: what is running and waiting, recent results, storage use."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from labcloud.request_scope import Ctx, DbSession
from labcloud.services import jobs as job_service
from labcloud.services import projects, storage_limits
from labcloud.services.job_states import ACTIVE, TERMINAL, JobState
from labcloud.web.deps import PageRoute, PageUser
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SHOWN = 10


@router.get("/")
def dashboard(request: Request, principal: PageUser, session: DbSession, ctx: Ctx) -> Response:
    user = principal.user
    active = job_service.list_jobs(
        session, user, job_service.JobFilter(states=[JobState.QUEUED, *ACTIVE]), limit=SHOWN, cursor=None
    )
    recent = job_service.list_jobs(
        session, user, job_service.JobFilter(states=list(TERMINAL)), limit=SHOWN, cursor=None
    )
    used, limit = storage_limits.usage(session, ctx.settings, projects.personal(session, user).id)
    return render(
        request,
        "dashboard.html",
        {
            "active": active.items,
            "more_active": active.next_cursor is not None,
            "recent": recent.items,
            "used": used,
            "limit": limit,
            "percent": None if not limit else min(100.0, 100.0 * used / limit),
            "apps": ctx.apps.apps(),
        },
    )
