"""A project's budget, the forms of its page: members ask for more of a quota, its managers (and admins)
approve or reject the requests with a note, choose what a job beyond a time quota gets and rename or
describe the project; admins set and remove quotas; everyone in it downloads the usage report as CSV.

The rules are :mod:`labcloud.services.quotas`, :mod:`~labcloud.services.projects` and
:mod:`~labcloud.services.accounting`'s. A form that fails comes back with every error next to its field
and what was typed kept; one that works goes back to the page (post/redirect/get) with a message.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response

from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, NotFound
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import accounting, projects, quota_requests, quotas
from labcloud.services.projects import Action
from labcloud.web import budget
from labcloud.web.deps import AdminForm, FormUser, PageRoute, PageUser
from labcloud.web.routes.projects import back, field_errors, show_project

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DECISIONS = ("approve", "reject")


def _number(raw: str) -> float:
    """A number typed into a form; NaN for anything else, which the service refuses along with the
    form's other errors."""
    try:
        return float(raw.strip())
    except ValueError:
        return math.nan


def _day(raw: str, name: str, errors: dict[str, str]) -> datetime | None:
    """A date typed into a form (YYYY-MM-DD) as its first moment in UTC; None when empty or not a date
    (then the error goes under ``name``)."""
    if not raw.strip():
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        errors[name] = "a date as YYYY-MM-DD"
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _merge(first: dict[str, str], then: dict[str, str]) -> dict[str, str]:
    """Two sets of errors by field; a field in both gets both messages."""
    merged = dict(first)
    for key, message in then.items():
        merged[key] = f"{merged[key]}; {message}" if key in merged else message
    return merged


# ---------------------------------------------------------------------------------- asking for more


@router.post("/projects/{slug}/quota-requests")
def ask(
    request: Request,
    slug: str,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    resource: Annotated[str, Form(max_length=100)] = "",
    amount: Annotated[str, Form(max_length=100)] = "",
    justification: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """Members (and more) ask for more of one of the project's quotas, saying why."""
    project = projects.by_slug(session, principal.user, slug, Action.RUN)
    try:
        found = quota_requests.request_more(
            session, principal.user.id, project, resource, _number(amount), justification
        )
    except InvalidInput as exc:
        errors = field_errors(exc, "justification")
        form = {"resource": resource, "amount": amount, "justification": justification}
        return show_project(
            request, session, principal.user, project, exc.status, ask_errors=errors, ask_form=form
        )
    what = f"{budget.amount(found.amount)} {quotas.UNITS[found.resource]} more of {found.resource}"
    return back(ctx, f"/projects/{project.slug}#requests", f"You asked for {what}; the managers decide.")


@router.post("/projects/{slug}/quota-requests/{request_id}")
def decide(
    slug: str,
    request_id: uuid.UUID,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    decision: Annotated[str, Form(max_length=20)] = "",
    note: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """The project's managers and owners, and admins, approve (the limit grows by the amount) or reject a
    pending request, with a note for whoever asked."""
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    if decision not in DECISIONS:
        raise InvalidInput.field(["body", "decision"], "approve or reject")
    here = f"/projects/{project.slug}#requests"
    try:
        found = quota_requests.decide(
            session, principal.user, project, request_id, decision == "approve", note
        )
    except Conflict as exc:
        return back(ctx, here, exc.detail, "bad")
    what = f"{budget.amount(found.amount)} {quotas.UNITS[found.resource]} more of {found.resource}"
    if found.state == "approved":
        return back(ctx, here, f"Approved: {what}; the quota's limit has grown by as much.")
    return back(ctx, here, f"Rejected: {what}.")


# ------------------------------------------------------------------------------------------ managers


@router.post("/projects/{slug}/settings")
def change_settings(
    request: Request,
    slug: str,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
    over_quota: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Managers rename or describe the project and choose what a job that does not fit in a time quota
    gets (refused, or cut to what is left)."""
    project = projects.by_slug(session, principal.user, slug, Action.MANAGE)
    errors: dict[str, str] = {}
    if over_quota not in quotas.POLICIES:
        errors["over_quota"] = "refuse or cut"
    try:
        projects.change(session, project, name, description, None if errors else over_quota)
    except InvalidInput as exc:
        errors = _merge(errors, field_errors(exc, "name"))
    if errors:
        session.rollback()  # nothing of a form that failed is kept
        form = {"name": name, "description": description, "over_quota": over_quota}
        return show_project(
            request, session, principal.user, project, 422, settings_errors=errors, settings_form=form
        )
    return back(ctx, f"/projects/{project.slug}#settings", "The project's settings are saved.")


# -------------------------------------------------------------------------------------------- admins


@router.post("/projects/{slug}/quotas")
def set_quota(
    request: Request,
    slug: str,
    principal: AdminForm,
    session: DbSession,
    ctx: Ctx,
    resource: Annotated[str, Form(max_length=100)] = "",
    limit: Annotated[str, Form(max_length=100)] = "",
    period: Annotated[str, Form(max_length=20)] = "monthly",
    starts_at: Annotated[str, Form(max_length=40)] = "",
    ends_at: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Admins set (or make) one of the project's quotas: its limit and period, and an allocation's first
    day and the day it ends before. What was used this period stays."""
    project = projects.by_slug(session, principal.user, slug)
    errors: dict[str, str] = {}
    starts, ends = _day(starts_at, "starts_at", errors), _day(ends_at, "ends_at", errors)
    try:
        quotas.set_quota(session, project, resource, _number(limit), period, starts, ends)
    except InvalidInput as exc:
        errors = _merge(errors, field_errors(exc, "resource"))
    if errors:
        session.rollback()
        form = {
            "resource": resource,
            "limit": limit,
            "period": period,
            "starts_at": starts_at,
            "ends_at": ends_at,
        }
        return show_project(
            request, session, principal.user, project, 422, quota_errors=errors, quota_form=form
        )
    return back(ctx, f"/projects/{project.slug}#quotas", f"The {resource} quota is set.")


@router.post("/projects/{slug}/quotas/{resource}/remove")
def remove_quota(slug: str, resource: str, principal: AdminForm, session: DbSession, ctx: Ctx) -> Response:
    project = projects.by_slug(session, principal.user, slug)
    if resource not in quotas.RESOURCES:
        raise NotFound(f"There is no quota resource {resource[:40]!r}.")
    quotas.remove_quota(session, project, resource)
    return back(ctx, f"/projects/{project.slug}#quotas", f"The {resource} quota is removed: no limit now.")


# --------------------------------------------------------------------------------------------- usage


@router.get("/projects/{slug}/usage.csv")
def usage_csv(
    slug: str,
    principal: PageUser,
    session: DbSession,
    by: Annotated[str, Query(max_length=20)] = budget.USAGE_GROUPS[0],
    months: Annotated[str, Query(max_length=4)] = str(budget.DEFAULT_MONTHS),
) -> Response:
    """The usage report the page shows, as a CSV file to download."""
    project = projects.by_slug(session, principal.user, slug)
    chosen, count = budget.usage_choice(by, months)
    since = budget.usage_since(count, utcnow())
    report = accounting.report(session, chosen, project_id=project.id, since=since)
    name = f"{project.slug}-usage-by-{chosen}-since-{since.date().isoformat()}.csv"
    return Response(
        report.csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
