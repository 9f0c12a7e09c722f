"""The app registry: what can be run, with everything a client needs to build a form."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from labcloud.api.deps import Ctx, Reader
from labcloud.api.guard import GuardedRoute
from labcloud.registry import app_to_public
from labcloud.registry.models import AppSpec

router = APIRouter(prefix="/api/v1/apps", tags=["apps"], route_class=GuardedRoute)


@router.get("", summary="List apps")
def list_apps(principal: Reader, ctx: Ctx) -> dict[str, Any]:
    """Every app with its versions, entrypoints, parameter schemas and inputs. Admins also see the
    registry files that failed to load, and why."""
    apps = ctx.apps.apps()
    problem = ctx.container_problem() if any(_in_containers(app) for app in apps) else None
    body: dict[str, Any] = {"items": [app_to_public(app, problem) for app in apps]}
    if principal.user.is_admin:
        body["problems"] = [
            {"path": p.path, "line": p.line, "message": p.message} for p in ctx.apps.problems()
        ]
    return body


@router.get("/{app}", summary="One app")
def get_app(app: str, _principal: Reader, ctx: Ctx) -> dict[str, Any]:
    found = ctx.apps.get(app)
    return app_to_public(found, ctx.container_problem() if _in_containers(found) else None)


def _in_containers(app: AppSpec) -> bool:
    return any(ep.runtime == "container" for v in app.versions.values() for ep in v.entrypoints.values())
