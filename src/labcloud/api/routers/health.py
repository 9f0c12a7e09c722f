"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from labcloud import __version__
from labcloud.api.deps import Ctx
from labcloud.api.errors import problem
from labcloud.api.guard import GuardedRoute

router = APIRouter(tags=["health"], route_class=GuardedRoute)
log = logging.getLogger(__name__)


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="The service can reach its database and its file store")
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
