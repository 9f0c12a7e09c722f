"""Administration of the installation: maintenance mode and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import Admin, Ctx, DbSession
from labcloud.api.openapi import problems
from labcloud.api.schemas import PageOut
from labcloud.http.guard import GuardedRoute
from labcloud.services import audit_log, maintenance

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], route_class=GuardedRoute)


class MaintenanceOut(BaseModel):
    enabled: bool
    message: str = Field(description="What refused requests and the pages' banner say.")
    retry_after_s: int = Field(description="The Retry-After of refused requests, in seconds.")
    changed_at: datetime | None
    changed_by: str


class MaintenanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    message: str | None = Field(
        None, max_length=10_000, description="Kept as it was when left out; checked by the server."
    )
    retry_after_s: int | None = Field(None, description="Kept as it was when left out.")


class ActorOut(BaseModel):
    kind: str = Field(description="user, system (the server, or cli:<os user> on its shell) or anonymous")
    id: uuid.UUID | None
    email: str | None = Field(description="The account's e-mail when it acted.")
    label: str = Field(description="The API token used (its prefix), or cli:<os user>.")
    token_id: uuid.UUID | None


class TargetOut(BaseModel):
    kind: str
    id: str | None


class AuditEventOut(BaseModel):
    id: uuid.UUID
    at: datetime
    actor: ActorOut
    action: str
    target: TargetOut | None
    details: dict[str, Any]
    ip: str | None
    user_agent: str | None


@router.get("/maintenance", response_model=MaintenanceOut, summary="Whether maintenance mode is on")
def get_maintenance(_admin: Admin, session: DbSession) -> MaintenanceOut:
    return MaintenanceOut(**maintenance.read(session).as_dict())


@router.put(
    "/maintenance",
    response_model=MaintenanceOut,
    responses=problems(422),
    summary="Turn maintenance mode on or off",
)
async def put_maintenance(body: MaintenanceIn, _admin: Admin, ctx: Ctx) -> MaintenanceOut:
    """On: new submits and uploads get 503 with Retry-After and the message, workers and the dispatcher
    start nothing new; what runs continues. Every replica follows within two seconds."""
    state = await run_in_threadpool(
        maintenance.switch, ctx.db, body.enabled, body.message, body.retry_after_s
    )
    if not state.enabled:
        ctx.notify()  # what waited may start now, here and on the other replicas
    return MaintenanceOut(**state.as_dict())


@router.get(
    "/audit",
    response_model=PageOut[AuditEventOut],
    responses=problems(422),
    summary="The audit log, newest first",
)
def list_audit(
    _admin: Admin,
    session: DbSession,
    actor: str | None = Query(None, description="A user id, an e-mail, or a label (cli:root)."),
    action: str | None = Query(None, description="An action (login.failed) or its family (login)."),
    target: str | None = Query(None, description="KIND or KIND:ID, e.g. job:0193... or user."),
    since: str | None = Query(None, description="ISO 8601 date or time (UTC unless it says)."),
    until: str | None = Query(None, description="ISO 8601 date or time (UTC unless it says)."),
    cursor: str | None = Query(None),
    limit: str | None = Query(None, description="1 to 200; default 50."),
) -> PageOut[AuditEventOut]:
    """Every bad filter is named in one 422."""
    flt = audit_log.parse_filter(
        actor=actor, action=action, target=target, since=since, until=until, cursor=cursor, limit=limit
    )
    page = audit_log.events(session, flt, cursor)
    return PageOut[AuditEventOut].of(page, lambda e: AuditEventOut.model_validate(audit_log.as_dict(e)))
