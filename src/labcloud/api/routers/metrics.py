"""Prometheus metrics: what this process counted and the installation's gauges, read when scraped (see
:mod:`labcloud.telemetry`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from labcloud.api.deps import Ctx
from labcloud.http.guard import GuardedRoute
from labcloud.telemetry import access
from labcloud.telemetry.gauges import DatabaseGauges
from labcloud.telemetry.metrics import REGISTRY

router = APIRouter(tags=["health"], route_class=GuardedRoute, include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics (this machine, or with the metrics token)")
def metrics(request: Request, ctx: Ctx) -> Response:
    refused = access.refusal(request, ctx.settings)
    if refused is not None:
        return refused
    gauges = CollectorRegistry()
    gauges.register(DatabaseGauges(ctx))
    return Response(generate_latest(REGISTRY) + generate_latest(gauges), media_type=CONTENT_TYPE_LATEST)
