"""Jobs: the list (live), one job's page (state, progress, timeline, live log, outputs), cancel, rerun.

Log streams and output downloads answer as the API's do (:mod:`labcloud.http`), with the browser's session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from sqlalchemy.orm import Session

from labcloud.db.models import Job, JobGroup, Project
from labcloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from labcloud.http import job_log
from labcloud.http.downloads import send_file, send_outputs_zip, send_zip
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import accounting, files, job_checks, job_files, job_logs, projects, targets, users
from labcloud.services import jobs as job_service
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.services.quotas import QuotaExceeded
from labcloud.services.tokens import Principal
from labcloud.web import previews
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, StreamUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 50
LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProjectLabel:
    """How a job's project is shown: its name and page for the user's projects, else its slug."""

    name: str
    url: str | None


def project_labels(
    session: Session, mine: list[Project], jobs: Iterable[Job]
) -> dict[uuid.UUID, ProjectLabel]:
    """The label of each job's project; ``mine``: the user's projects (:func:`projects.mine`)."""
    wanted = {job.project_id for job in jobs}
    labels = {p.id: ProjectLabel(p.name, f"/projects/{p.slug}") for p in mine if p.id in wanted}
    others = projects.display_names(session, [i for i in wanted if i not in labels])  # e.g. an admin's look
    return {**labels, **{i: ProjectLabel(name, None) for i, name in others.items()}}


def _filter(
    state: list[str], app: str, project: str, q: str, tag: str, after: str, before: str, order: str = ""
) -> tuple[job_service.JobFilter, dict[str, Any], dict[str, str]]:
    """The filter, what the form shows as chosen, and the error of each field that could not be read
    (the rest still filters)."""
    known = [JobState(s) for s in state if s in {m.value for m in JobState}]
    errors: dict[str, str] = {}
    tags: dict[str, str] = {}
    try:
        tags = job_checks.tag_filters(tag.split(), ["tag"])
    except InvalidInput as exc:
        errors["tag"] = "; ".join(e["msg"] for e in exc.errors or [])
    dates: dict[str, datetime | None] = {}
    for name, text in (("after", after), ("before", before)):
        try:
            day = date.fromisoformat(text.strip()) if text.strip() else None
        except ValueError:
            errors[name], day = "a date, as 2026-12-31", None
        dates[name] = datetime.combine(day, time(), tzinfo=UTC) if day else None
    if dates["before"] is not None:
        dates["before"] += timedelta(days=1)  # (the whole of that day)
    flt = job_service.JobFilter(
        states=known,
        app=app.strip() or None,
        project=project.strip() or None,
        tags=tags,
        text=q.strip() or None,
        created_after=dates["after"],
        created_before=dates["before"],
        oldest_first=order == "oldest",
    )
    chosen = {
        "state": [s.value for s in known],
        "app": app.strip(),
        "project": project.strip(),
        "q": q.strip(),
        "tag": tag.strip(),
        "after": after.strip(),
        "before": before.strip(),
        "order": "oldest" if order == "oldest" else "",
    }
    return flt, chosen, errors


def _list_context(
    request: Request,
    principal: PageUser,
    session: DbSession,
    ctx: Ctx,
    state: list[str] = Query([]),
    app: str = "",
    project: str = Query("", max_length=40),
    q: str = Query("", max_length=200),
    tag: str = Query("", max_length=2000),
    after: str = Query("", max_length=20),
    before: str = Query("", max_length=20),
    order: str = Query("", max_length=10),
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of the user's jobs, or of a project's (everyone's), as the query filters them: what the
    list and its table show."""
    flt, chosen, errors = _filter(state, app, project, q, tag, after, before, order)
    page = job_service.list_jobs(session, principal.user, flt, limit=PAGE_SIZE, cursor=cursor)
    live = any(job.state not in TERMINAL for job in page.items)
    mine = [p for p, _ in projects.mine(session, principal.user)]
    return {
        "jobs": page.items,
        "project_labels": project_labels(session, mine, page.items),
        "projects": mine,
        "next_cursor": page.next_cursor,
        "cursor": cursor,
        "chosen": chosen,
        "filtered": any(chosen.values()),
        "narrowed": any(v for k, v in chosen.items() if k not in ("project", "order")),
        "errors": errors,
        "more": urlencode({k: v for k, v in chosen.items() if k != "state" and v}, doseq=True)
        + "".join(f"&state={s}" for s in chosen["state"]),
        "live": live,
        "query": request.url.query,
        "app_names": [a.name for a in ctx.apps.apps()],
    }


JobList = Annotated[dict[str, Any], Depends(_list_context)]


@router.get("/jobs")
def job_list(request: Request, context: JobList) -> Response:
    return render(request, "jobs.html", context)


@router.get("/jobs/rows")
def job_rows(request: Request, context: JobList) -> Response:
    """The list's table alone, polled by the page while some job on it has not ended."""
    return render(request, "partials/job_table.html", context)


def _allowed(check: Callable[[], object]) -> bool:
    """Whether a service's check lets the user through: the page offers only what the services allow."""
    try:
        check()
    except (Forbidden, NotFound):
        return False
    return True


def _status_context(
    session: Session, principal: Principal, ctx: Runtime, job_id: uuid.UUID, full: bool = False
) -> dict[str, Any]:
    user = principal.user
    job = job_service.get_job(session, user, job_id)
    project = session.get(Project, job.project_id)
    assert project is not None  # (the foreign key)
    ended = job.state in {s.value for s in TERMINAL}
    outputs = job_files.job_outputs(session, job.project_id, job.id) if ended else []
    start = len(job_files.job_outputs_folder(job.id)) + 1
    # (what a finished job's rerun may take; the page shows them too, the polled status only once ended)
    inputs = job_service.inputs_of(session, user, job) if ended or full else []
    return {
        "input_files": _by_slot(inputs),
        # something at an input's path is no longer what the job read: a rerun may take either
        "inputs_moved_on": any(f.now != "same" for f in inputs),
        "job": job,
        "message": ctx.message(job),
        "events": job_service.events(session, job),
        "ended": ended,
        "cancellable": job.state not in {s.value for s in TERMINAL}
        and job.state != JobState.CANCELLING.value
        and _allowed(lambda: projects.authorize_job(session, user, job, projects.Action.MANAGE)),
        # a rerun goes into the same project: it takes a role that runs jobs there
        "rerunnable": _allowed(lambda: projects.authorize(session, user, project, projects.Action.RUN)),
        "outputs": [(row, row.path[start:]) for row in outputs],
        "previews": previews.previews(ctx.storage, outputs) if ended else {},
        "attempt_history": accounting.attempts(session, job),
        "running_on": None
        if ended or job.state == JobState.QUEUED.value
        else accounting.where_it_ran(session, job),
    }


def _by_slot(inputs: list[job_service.InputFile]) -> dict[str, list[job_service.InputFile]]:
    out: dict[str, list[job_service.InputFile]] = {}
    for item in inputs:
        out.setdefault(item.pin.slot, []).append(item)
    return out


@router.get("/jobs/{job_id}")
def job_page(
    request: Request, job_id: uuid.UUID, principal: PageUser, session: DbSession, ctx: Ctx
) -> Response:
    context = _status_context(session, principal, ctx, job_id, full=True)
    job = context["job"]
    context["log_offset"] = job_logs.tail_start(ctx.settings, job_id, LOG_TAIL_BYTES)
    mine = [p for p, _ in projects.mine(session, principal.user)]
    context["project"] = project_labels(session, mine, [job])[job.project_id]
    context["mine"] = job.owner_id == principal.user.id
    context["owner"] = None if context["mine"] else users.get_user(session, job.owner_id)
    context["group"] = session.get(JobGroup, job.group_id) if job.group_id else None
    context["targets"] = targets.workers_of(session, [job.id]).get(job.id, []) if job.targeted else []
    return render(request, "job.html", context)


@router.get("/jobs/{job_id}/status")
def job_status(
    request: Request, job_id: uuid.UUID, principal: PageUser, session: DbSession, ctx: Ctx
) -> Response:
    """State, progress, timeline, buttons and outputs: polled by the job page until the job ends."""
    return render(request, "partials/job_status.html", _status_context(session, principal, ctx, job_id))


@router.get("/jobs/{job_id}/log/stream")
async def log_stream(
    job_id: uuid.UUID,
    request: Request,
    principal: StreamUser,
    ctx: Ctx,
    offset: int = Query(0, ge=0, le=job_logs.MAX_OFFSET),
) -> Response:
    """The live log as server-sent events, with when each line came (EventSource cannot send a bearer
    header; the cookie goes)."""
    return await job_log.log_response(
        ctx, request, principal.user, job_id, follow=True, offset=offset, times=True
    )


@router.get("/jobs/{job_id}/log.txt")
async def log_text(
    job_id: uuid.UUID, request: Request, principal: StreamUser, ctx: Ctx, times: bool = False
) -> Response:
    return await job_log.log_response(
        ctx, request, principal.user, job_id, follow=False, offset=0, times=times
    )


@router.get("/jobs/{job_id}/outputs.zip")
def outputs_zip(job_id: uuid.UUID, principal: StreamUser, ctx: Ctx) -> Response:
    with ctx.db.session() as session:  # not held while the zip streams
        rows = job_service.outputs(session, principal.user, job_id)
    return send_outputs_zip(ctx.storage, job_id, rows)


@router.get("/jobs/{job_id}/outputs/{path:anypath}")
def output_file(
    job_id: uuid.UUID, path: str, request: Request, principal: StreamUser, ctx: Ctx, view: bool = False
) -> Response:
    """An output, downloaded; with ``?view=1`` an image or a text shown full size in the browser."""
    rel = files.clean(path, ["path", "path"])
    with ctx.db.session() as session:
        row = job_service.output(session, principal.user, job_id, rel)
    return send_file(ctx, request, row, view=view)


@router.get("/jobs/{job_id}/inputs/{slot}/{path:anypath}")
def input_file(
    job_id: uuid.UUID,
    slot: str,
    path: str,
    request: Request,
    principal: StreamUser,
    ctx: Ctx,
    view: bool = False,
) -> Response:
    """The content an input's file had when the job was submitted (what the job read), downloaded."""
    with ctx.db.session() as session:
        row = job_service.input_file(session, principal.user, job_id, slot, path)
    return send_file(ctx, request, row, view=view)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    response = redirect(f"/jobs/{job_id}")
    try:
        ctx.cancel(session, principal.user, job_id)
    except Conflict as exc:
        web_session.flash(response, ctx.settings, exc.detail, "bad")
    else:
        web_session.flash(response, ctx.settings, "Cancel requested.")
    return response


@router.post("/jobs/{job_id}/rerun")
def rerun(
    job_id: uuid.UUID,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    image: Annotated[str, Form(max_length=10)] = "pinned",
    inputs: Annotated[str, Form(max_length=10)] = "original",
) -> Response:
    try:
        new = ctx.rerun(
            session,
            principal.user,
            job_id,
            "current" if image == "current" else "pinned",
            "current" if inputs == "current" else "original",
        )
    except (InvalidInput, Forbidden, QuotaExceeded) as exc:  # e.g. inputs gone, the project's quota
        session.rollback()
        response = redirect(f"/jobs/{job_id}")
        problems = "; ".join(str(e.get("msg", "")) for e in exc.errors or []) or exc.detail
        web_session.flash(response, ctx.settings, f"It could not start again: {problems}", "bad")
        return response
    response = redirect(f"/jobs/{new.id}")
    web_session.flash(response, ctx.settings, f"Started again as job {new.id}.")
    return response


BULK_MAX = 100  # jobs one bulk action takes


@router.post("/jobs/bulk")
async def bulk(request: Request, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    """One action on the jobs ticked in the list: cancel them, delete them (ended ones), or download all
    their outputs as one zip (a folder per job). Each job is checked as if it were alone; what could not
    be done is counted and said."""
    form = await request.form()
    action = str(form.get("action", ""))
    ids: list[uuid.UUID] = []
    for raw in form.getlist("job")[:BULK_MAX]:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    shown = str(form.get("back", ""))
    back = redirect(shown if shown.startswith("/jobs") and "//" not in shown else "/jobs")
    if not ids or action not in ("cancel", "delete", "download"):
        told = "Tick some jobs first, then choose what to do with them."
        web_session.flash(back, ctx.settings, told, "bad")
        return back
    if action == "download":
        rows = []
        for job_id in ids:
            try:
                rows += job_service.outputs(session, principal.user, job_id)
            except (NotFound, Forbidden):
                continue
        return send_zip(ctx.storage, rows, "jobs", f"{len(ids)}-jobs-outputs.zip", keep_root=False)
    done, refused = 0, []
    for job_id in ids:
        try:  # (each one is committed by itself, or undone)
            if action == "cancel":
                ctx.cancel(session, principal.user, job_id)
            else:
                ctx.delete_job(session, principal.user, job_id)
            done += 1
        except (Conflict, Forbidden, NotFound) as exc:
            session.rollback()
            refused.append(exc.detail)
    verb = {"cancel": "Cancelled", "delete": "Deleted"}[action]
    words = f"{verb} {done} job{'s' if done != 1 else ''}."
    if refused:
        words += f" {len(refused)} could not be: {refused[0]}" + (" (and others)" if len(refused) > 1 else "")
    web_session.flash(back, ctx.settings, words, "bad" if refused and not done else "ok")
    return back
