"""Administration: every user's jobs, by default the queue (what waits, and why; what runs, and where),
with a cancel for each."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from labcloud.errors import Conflict
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import jobs as job_service
from labcloud.services import projects
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.web import session as web_session
from labcloud.web.deps import AdminForm, AdminPage, PageRoute, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ADMIN_JOBS_PAGE = 100
QUEUE_VIEWS = {  # what the page shows: the queue (what waits and runs) by default
    "active": [s for s in JobState if s not in TERMINAL],
    "queued": [JobState.QUEUED],
    "ended": list(TERMINAL),
    "all": [],
}


def _jobs_context(
    admin: AdminPage,
    session: DbSession,
    ctx: Ctx,
    view: Annotated[str, Query(max_length=10)] = "active",
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of every user's jobs in the chosen view: what the page and its polled table show."""
    view = view if view in QUEUE_VIEWS else "active"
    flt = job_service.JobFilter(states=QUEUE_VIEWS[view], everyone=True)
    page = job_service.list_jobs(session, admin.user, flt, limit=ADMIN_JOBS_PAGE, cursor=cursor)
    names = job_service.names_of(session, page.items)
    called = projects.display_names(session, [job.project_id for job in page.items])
    return {
        "rows": [
            {
                "job": job,
                "owner": names.owners.get(job.owner_id, ""),
                "project": called.get(job.project_id, ""),
                "message": ctx.message(job),
                "where": names.workers.get(job.worker_id) if job.worker_id else None,
                "cancellable": job.state not in TERMINAL and job.state != JobState.CANCELLING,
            }
            for job in page.items
        ],
        "view": view,
        "views": list(QUEUE_VIEWS),
        "next_cursor": page.next_cursor,
        "cursor": cursor,
    }


AdminJobs = Annotated[dict[str, Any], Depends(_jobs_context)]


@router.get("/admin/jobs")
def all_jobs(request: Request, context: AdminJobs) -> Response:
    """Every user's jobs: by default the queue, what waits (and why) and what runs, with cancel."""
    return render(request, "admin_jobs.html", context)


@router.get("/admin/jobs/rows")
def all_job_rows(request: Request, context: AdminJobs) -> Response:
    """The table alone, polled by the page."""
    return render(request, "partials/admin_job_table.html", context)


@router.post("/admin/jobs/{job_id}/cancel")
def cancel_any_job(job_id: uuid.UUID, admin: AdminForm, session: DbSession, ctx: Ctx) -> Response:
    response = redirect("/admin/jobs")
    try:
        job = ctx.cancel(session, admin.user, job_id)
    except Conflict as exc:  # it ended meanwhile
        session.rollback()
        web_session.flash(response, ctx.settings, exc.detail, "bad")
        return response
    web_session.flash(response, ctx.settings, f"Job {job.app} #{job.run_number} of its owner is {job.state}.")
    return response
