"""GA4GH TES 1.1 at /ga4gh/tes/v1 (spec: shared/specs/ga4gh-tes-1.1.openapi.yaml): service-info, and the
caller's tasks: create, list, read (MINIMAL, BASIC or FULL view), cancel. The rules are
:mod:`labcloud.services.tes` (checked by ``tes_document``, read by ``tes_views``); a task is a job
(:mod:`labcloud.services.jobs`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from labcloud.api.deps import AppSettings, Ctx, DbSession, Reader, Writer
from labcloud.api.openapi import problems
from labcloud.api.tes_schemas import (
    TesCancelTaskResponse,
    TesCreateTaskResponse,
    TesListTasksResponse,
    TesServiceInfo,
    TesTask,
)
from labcloud.http.guard import GuardedRoute
from labcloud.services import tes_views
from labcloud.services.tes_document import TaskRefused

REFUSED = "Not valid: the task (`errors` names each field at fault), or a query parameter."

router = APIRouter(prefix="/ga4gh/tes/v1", tags=["GA4GH TES"], route_class=GuardedRoute)


def _answers(model: type[BaseModel], description: str, refuses: bool = False) -> dict[int | str, Any]:
    """The ``responses=`` of a route that answers the dict its view made, as it is (``response_model=None``:
    a response model would add the fields a view leaves out, as nulls): ``model`` describes it; 400 where
    the route refuses a task or a query that is not valid (401 and 404 follow from the route itself)."""
    answers: dict[int | str, Any] = {200: {"model": model, "description": description}}
    if refuses:
        answers[400] = {**problems(400)[400], "description": REFUSED}
    return answers


def _view(view: str) -> str:
    chosen = view.upper() if view else "MINIMAL"
    if chosen not in tes_views.VIEWS:
        raise TaskRefused(f"view must be one of {', '.join(tes_views.VIEWS)}.")
    return chosen


@router.get(
    "/service-info",
    summary="GetServiceInfo",
    response_model=None,
    responses=_answers(TesServiceInfo, "The service and what of TES it supports."),
)
def service_info(settings: AppSettings) -> dict[str, Any]:
    return tes_views.service_info(settings)


@router.post(
    "/tasks",
    summary="CreateTask",
    response_model=None,
    responses=_answers(TesCreateTaskResponse, "The new task's id.", refuses=True),
)
def create_task(
    principal: Writer, session: DbSession, ctx: Ctx, body: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Queue a task (a tesTask document); its id. A task that is not valid is refused with 400."""
    return {"id": str(ctx.submit_task(session, principal.user, body))}


@router.get(
    "/tasks",
    summary="ListTasks",
    response_model=None,
    responses=_answers(TesListTasksResponse, "A page of your tasks, newest first.", refuses=True),
)
def list_tasks(
    principal: Reader,
    session: DbSession,
    settings: AppSettings,
    name_prefix: str = Query("", max_length=200),
    state: str = Query("", max_length=20),
    tag_key: list[str] = Query([], max_length=20),
    tag_value: list[str] = Query([], max_length=20),
    page_size: str = Query(str(tes_views.DEFAULT_PAGE_SIZE), max_length=10),
    page_token: str | None = Query(None, max_length=100),
    view: str = Query("MINIMAL", max_length=10),
) -> dict[str, Any]:
    chosen = _view(view)
    if state and state not in tes_views.STATES:
        raise TaskRefused(f"state must be one of {', '.join(tes_views.STATES)}.")
    if not page_size.isdigit() or not 1 <= int(page_size) <= tes_views.MAX_PAGE_SIZE:
        raise TaskRefused(f"page_size must be a number from 1 to {tes_views.MAX_PAGE_SIZE}.")
    if len(tag_value) > len(tag_key):
        raise TaskRefused("Each tag_value needs its tag_key.")
    tags = [(key, tag_value[i] if i < len(tag_value) else "") for i, key in enumerate(tag_key)]
    flt = tes_views.TaskFilter(name_prefix=name_prefix, state=state, tags=tags)
    found, token = tes_views.list_tasks(session, principal.user, flt, int(page_size), page_token)
    answer: dict[str, Any] = {"tasks": [tes_views.view(settings, job, row, chosen) for job, row in found]}
    if token:
        answer["next_page_token"] = token
    return answer


@router.post(
    "/tasks/{task_id}:cancel",
    summary="CancelTask",
    response_model=None,
    responses=_answers(TesCancelTaskResponse, "Canceled, canceling, or it had ended."),
)
def cancel_task(task_id: str, principal: Writer, session: DbSession, ctx: Ctx) -> dict[str, Any]:
    """A queued task is canceled at once, a running one is CANCELING until its container is gone; a task
    that has ended stays as it is."""
    job, _ = tes_views.get(session, principal.user, task_id)
    if tes_views.tes_state(job) in ("QUEUED", "INITIALIZING", "RUNNING"):
        ctx.cancel(session, principal.user, job.id)
    return {}


@router.get(
    "/tasks/{task_id}",
    summary="GetTask",
    response_model=None,
    responses=_answers(TesTask, "The task in the view asked for.", refuses=True),
)
def get_task(
    task_id: str,
    principal: Reader,
    session: DbSession,
    settings: AppSettings,
    view: str = Query("MINIMAL", max_length=10),
) -> dict[str, Any]:
    job, row = tes_views.get(session, principal.user, task_id)
    return tes_views.view(settings, job, row, _view(view))
