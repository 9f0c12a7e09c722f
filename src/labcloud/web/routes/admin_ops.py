"""Administration of the installation: maintenance mode (a form) and the audit log (filters, pages)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response

from labcloud.errors import InvalidInput
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import audit_log, maintenance
from labcloud.web import session as web_session
from labcloud.web.deps import AdminForm, AdminPage, PageRoute, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _field_errors(exc: InvalidInput) -> dict[str, str]:
    return {str(e["loc"][-1]): str(e["msg"]) for e in exc.errors or []}


@router.get("/admin/maintenance")
def maintenance_page(request: Request, _admin: AdminPage, session: DbSession) -> Response:
    state = maintenance.read(session)
    form = {"message": state.message, "retry_after_s": str(state.retry_after_s)}
    return render(request, "admin_maintenance.html", {"state": state, "form": form, "errors": {}})


@router.post("/admin/maintenance")
def switch_maintenance(
    request: Request,
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    action: Annotated[str, Form(max_length=10)] = "",
    message: Annotated[str, Form(max_length=10_000)] = "",
    retry_after_s: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    form = {"message": message, "retry_after_s": retry_after_s}
    errors: dict[str, str] = {}
    if action not in ("on", "off"):
        errors["action"] = "choose on or off"
    retry: int | None = None
    if retry_after_s.strip():
        try:
            retry = int(retry_after_s.strip())
        except ValueError:
            errors["retry_after_s"] = "a whole number of seconds"
    problems = maintenance.check(message, retry)
    errors |= {str(e["loc"][-1]): str(e["msg"]) for e in problems}
    if errors:
        context = {"state": maintenance.read(session), "form": form, "errors": errors}
        return render(request, "admin_maintenance.html", context, 422)
    state = maintenance.switch(ctx.db, action == "on", message, retry)
    if not state.enabled:
        ctx.notify()  # what waited may start now, here and on the other replicas
    response = redirect("/admin/maintenance")
    said = "on: new jobs and uploads are refused" if state.enabled else "off: everything resumes"
    web_session.flash(response, ctx.settings, f"Maintenance is {said}.")
    return response


@router.get("/admin/audit")
def audit_page(
    request: Request,
    _admin: AdminPage,
    session: DbSession,
    actor: str = "",
    action: str = "",
    target: str = "",
    since: str = "",
    until: str = "",
    cursor: str | None = None,
) -> Response:
    filters = {"actor": actor, "action": action, "target": target, "since": since, "until": until}
    context: dict[str, Any] = {"filters": filters, "errors": {}, "events": [], "next_url": None}
    try:
        flt = audit_log.parse_filter(**filters, cursor=cursor, limit="100")
    except InvalidInput as exc:
        return render(request, "admin_audit.html", {**context, "errors": _field_errors(exc)}, 422)
    page = audit_log.events(session, flt, cursor)
    if page.next_cursor:
        kept = {k: v for k, v in filters.items() if v}
        context["next_url"] = "/admin/audit?" + urlencode({**kept, "cursor": page.next_cursor})
    context["events"] = page.items
    return render(request, "admin_audit.html", context)
