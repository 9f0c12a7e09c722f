"""The apps catalogue, and each app's run form generated from its entrypoint's parameter schema."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from labcloud.db.models import Job, User, Worker, WorkerState
from labcloud.errors import InvalidInput, NotFound
from labcloud.registry import ResolvedEntrypoint
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import device_sessions, files, projects, spaces
from labcloud.services import jobs as job_service
from labcloud.services import workers as worker_service
from labcloud.services.handover import ENGINE_TOKEN_PREFIX
from labcloud.services.quotas import QuotaExceeded
from labcloud.services.tokens import Principal
from labcloud.web import forms
from labcloud.web.deps import FormUser, PageRoute, PageUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PICKER_MAX_ENTRIES = 1000


@router.get("/apps")
def catalogue(request: Request, _principal: PageUser, ctx: Ctx) -> Response:
    apps = ctx.apps.apps()
    boxed = any(
        ep.runtime == "container" for a in apps for v in a.versions.values() for ep in v.entrypoints.values()
    )
    return render(
        request, "apps.html", {"apps": apps, "container_problem": ctx.container_problem() if boxed else None}
    )


def _resolve(ctx: Ctx, name: str, version: str | None, entrypoint: str | None) -> ResolvedEntrypoint:
    """Like the registry's resolve, but a version with several entrypoints and no default opens the first."""
    app = ctx.apps.get(name)
    chosen = version or app.latest_version
    if entrypoint is None and chosen in app.versions:
        spec = app.versions[chosen]
        entrypoint = spec.default_entrypoint_name() or next(iter(spec.entrypoints))
    return ctx.apps.resolve(name, chosen, entrypoint)


def file_choices(session: Session, user: User) -> dict[str, list[str]]:
    """Paths of the user's own files and folders for the input pickers, job outputs last, bounded so that
    a huge space still gives a quick page (any other path, a project's too, can be typed in)."""
    space = files.Space(projects.personal(session, user).id, user.id)
    return {kind: files.list_paths(session, space, kind, PICKER_MAX_ENTRIES) for kind in ("file", "folder")}


def project_choices(session: Session, user: User) -> list[tuple[str, str]]:
    """(slug, name) of the projects the user may start jobs in (member or more), personal first."""
    return [
        (project.slug, project.name)
        for project, role in projects.mine(session, user)
        if projects.Access(project, role, user.is_admin).may(projects.Action.RUN)
    ]


def _form(session: Session, ctx: Runtime, resolved: ResolvedEntrypoint, user: User) -> forms.RunForm:
    form = forms.build(
        resolved.entrypoint, file_choices(session, user), ctx.ceiling(), project_choices(session, user)
    )
    if resolved.entrypoint.executor in (None, "pull"):  # (an entrypoint bound elsewhere runs on no device)
        form.devices = _devices(session, ctx)
    return form


def _devices(session: Session, ctx: Runtime) -> list[tuple[str, str, str]]:
    """(name, location, state) of every worker one may choose to run on, by name."""
    rows = session.scalars(
        select(Worker).where(Worker.state != WorkerState.REVOKED, Worker.token_prefix != ENGINE_TOKEN_PREFIX)
    )
    return [
        (w.name, w.location, worker_service.state_of(w, ctx.settings))
        for w in sorted(rows, key=lambda w: w.name)
    ]


def _page(
    request: Request,
    ctx: Ctx,
    resolved: ResolvedEntrypoint,
    form: forms.RunForm,
    status: int = 200,
    earlier: Job | None = None,
) -> Response:
    app = resolved.app
    return render(
        request,
        "app.html",
        {
            "app": app,
            "resolved": resolved,
            "versions": app.sorted_versions(),
            "entrypoints": list(app.versions[resolved.version].entrypoints),
            "form": form,
            "earlier": earlier,
            "summary": forms.summary(form),
            "boolean_marker": forms.BOOLEAN_MARKER,
            "unavailable": ctx.container_problem() if resolved.entrypoint.runtime == "container" else None,
        },
        status,
    )


@router.get("/apps/{name}")
def app_page(
    request: Request,
    name: str,
    principal: PageUser,
    session: DbSession,
    ctx: Ctx,
    version: str | None = None,
    entrypoint: str | None = None,
    from_job: uuid.UUID | None = None,
) -> Response:
    earlier = job_service.get_job(session, principal.user, from_job) if from_job else None
    notes: list[str] = []
    try:
        resolved = _resolve(ctx, name, version, entrypoint)
    except NotFound:
        if earlier is None:
            raise
        resolved = _resolve(ctx, name, None, None)  # the job's version is gone: the current one
        notes.append(
            f"Version {version} is no longer offered: the form is {resolved.app.name} {resolved.version}'s, "
            "with the earlier job's answers where they still fit."
        )
    form = _form(session, ctx, resolved, principal.user)
    if earlier is not None:
        _fill_from(session, principal.user, form, earlier)
    else:
        for f in form.inputs:  # "Run with this file" links from the files page
            f.value = request.query_params.get(f.name, "")
    form.errors += notes
    return _page(request, ctx, resolved, form, earlier=earlier)


def _fill_from(session: Session, user: User, form: forms.RunForm, job: Job) -> None:
    """An earlier job's answers in the form; an input that is no longer where it was is marked."""
    slug = projects.slugs(session, [job.project_id]).get(job.project_id, "")
    offered = {s for s, _ in form.projects}
    resources = {
        "cpus": job.resources.cpus,
        "memory_mb": job.resources.memory_mb,
        "gpus": job.resources.gpus,
        "timeout_s": job.resources.timeout_s,
    }
    chosen = slug if slug in offered else ""
    forms.prefill(form, job.params, job.inputs, resources, job.name, job.tags, chosen)
    for f in form.inputs:
        if f.value:
            try:
                spaces.job_input(session, user, f.value, ["body", "inputs", f.key])
            except InvalidInput:
                f.error = f"{f.value} was moved or deleted since that job ran: choose a {f.attrs['type']}"


@router.post("/apps/{name}/run")
async def run(request: Request, name: str, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    data = await request.form()
    return await run_in_threadpool(_submit, request, name, principal, session, ctx, data)


def _submit(
    request: Request, name: str, principal: Principal, session: Session, ctx: Runtime, data: FormData
) -> Response:
    version, entrypoint = data.get("version"), data.get("entrypoint")
    resolved = _resolve(
        ctx,
        name,
        version if isinstance(version, str) else None,
        entrypoint if isinstance(entrypoint, str) else None,
    )
    form = _form(session, ctx, resolved, principal.user)
    sub = forms.read(form, resolved.entrypoint, data)
    sub.app, sub.version, sub.entrypoint = resolved.app.name, resolved.version, resolved.entrypoint_name
    if data.get("as_session"):
        return _start_session(request, principal, session, ctx, resolved, form, sub, data)
    try:  # (what the form found is told with all the service finds: one pass)
        job = ctx.submit(session, principal.user, sub, known=form.problems)
    except InvalidInput as exc:
        session.rollback()
        forms.attach_errors(form, exc.errors or [{"loc": [], "msg": exc.detail}])
        return _page(request, ctx, resolved, form, 422)
    except QuotaExceeded as exc:  # the chosen project has no room for it: next to the chooser
        session.rollback()
        form.project_error = exc.detail
        return _page(request, ctx, resolved, form, exc.status)
    return redirect(f"/jobs/{job.id}")


def _start_session(
    request: Request,
    principal: Principal,
    session: Session,
    ctx: Runtime,
    resolved: ResolvedEntrypoint,
    form: forms.RunForm,
    sub: job_service.Submission,
    data: FormData,
) -> Response:
    """The form's answers shared by every chosen device, each device's own over them: a session."""
    offered = {name for name, _, _ in form.devices}
    form.chosen_devices = [str(d) for d in data.getlist("device") if str(d) in offered]
    devices = []
    for name in form.chosen_devices:
        raw = str(data.get(f"device_params.{name}", "")).strip()[:2000]
        form.device_params[name] = raw
        try:
            own = forms.device_params(form, resolved.entrypoint, raw)
        except ValueError as exc:
            form.device_errors[name] = str(exc)
            own = {}
        devices.append(device_sessions.DeviceRequest(name, own))
    answered = {key for d in devices for key in d.params}  # (a device's own answer fills a field left empty)
    known = [p for p in form.problems if not (len(p["loc"]) > 2 and p["loc"][2] in answered)]
    if not form.chosen_devices:
        form.errors.append("Choose at least one device under “Run on devices”.")
        forms.attach_errors(form, known)
        return _page(request, ctx, resolved, form, 422)
    req = device_sessions.SessionRequest(
        app=sub.app,
        version=sub.version,
        entrypoint=sub.entrypoint,
        params=sub.params,
        inputs=sub.inputs,
        resources=sub.resources,
        devices=devices,
        name=sub.name,
        tags=sub.tags,
        project=sub.project,
        notify=sub.notify,
    )
    try:  # (checked whole even when a device's answers could not be read: every problem at once)
        group = ctx.start_session(session, principal.user, req, known, commit=not form.device_errors)
    except InvalidInput as exc:
        session.rollback()
        forms.attach_errors(form, exc.errors or [{"loc": [], "msg": exc.detail}])
        return _page(request, ctx, resolved, form, 422)
    except QuotaExceeded as exc:
        session.rollback()
        form.project_error = exc.detail
        return _page(request, ctx, resolved, form, exc.status)
    if form.device_errors:
        session.rollback()
        return _page(request, ctx, resolved, form, 422)
    return redirect(f"/sessions/{group.id}")


PICKER_PAGE = 200


@router.get("/ui/picker")
def picker(
    request: Request,
    principal: PageUser,
    session: DbSession,
    type: Annotated[str, Query(max_length=6)] = "file",
    accept: Annotated[str, Query(max_length=400)] = "",
    path: Annotated[str, Query(max_length=1024)] = "",
    target: Annotated[str, Query(max_length=80, pattern=r"^[A-Za-z0-9_-]+$")] = "",
) -> Response:
    """One folder of the user's files for an input's browser: its folders to open (and, for a folder
    slot, to choose) and the files the slot takes, each to choose."""
    endings = tuple(e.strip().lower() for e in accept.split(",") if e.strip())
    space = files.Space(projects.personal(session, principal.user).id, principal.user.id)
    try:
        entries, more = files.list_folder(session, space, path, limit=PICKER_PAGE, cursor=None)
    except (NotFound, InvalidInput):
        entries, more, path = [], None, ""
    shown = [
        e
        for e in entries
        if e.type == "folder" or (type == "file" and (not endings or e.path.lower().endswith(endings)))
    ]
    parent = path.rstrip("/").rpartition("/")[0] if path.strip("/") else None
    context = {
        "entries": shown,
        "path": path.strip("/"),
        "parent": parent,
        "more": more is not None,
        "kind": type if type in ("file", "folder") else "file",
        "accept": accept,
        "target": target,
    }
    return render(request, "partials/picker.html", context)
