"""Liveness and readiness probes."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from labcloud import __version__
from labcloud.api.deps import Ctx
from labcloud.api.openapi import problems
from labcloud.http.guard import GuardedRoute
from labcloud.http.problems import problem

router = APIRouter(tags=["health"], route_class=GuardedRoute)
log = logging.getLogger(__name__)


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str = Field(description="labcloud's version.")


class ReadyOut(BaseModel):
    status: Literal["ready"]
    database: str = Field(description="sqlite or postgresql")
    storage: str = Field(description="The file store: local or s3.")
    dispatching: bool = Field(description="This replica dispatches jobs (of several, exactly one does).")


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses=problems(503),
    summary="The service can reach its database and its file store",
)
def readyz(ctx: Ctx) -> JSONResponse:
    try:
        ctx.db.ping()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc.__class__.__name__)
        return problem(503, "The database cannot be reached.", title="Not ready")
    try:
        ctx.storage.check()
    except Exception as exc:
        log.warning("readiness check failed: storage: %s", exc)
        return problem(503, f"The file store cannot be reached: {exc}", title="Not ready")
    leads = ctx.leadership is not None and ctx.leadership.is_leader
    return JSONResponse(
        {
            "status": "ready",
            "database": ctx.db.engine.dialect.name,
            "storage": ctx.storage.kind,
            "dispatching": leads,  # of several replicas on one database, exactly one dispatches
        }
    )
