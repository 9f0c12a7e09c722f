"""The ASGI application."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from labcloud import __version__, web
from labcloud.api import docs, openapi
from labcloud.api.errors import install_error_handlers
from labcloud.api.routers import (
    apps,
    auth,
    budgets,
    device_sessions,
    devices,
    files,
    health,
    jobs,
    me,
    metrics,
    operations,
    projects,
    sso,
    sweeps,
    tes,
    uploads,
    usage_stats,
    users,
    webhooks,
    worker_api,
    worker_jobs,
    workers,
)
from labcloud.http.guard import Utf8Addresses
from labcloud.runtime import Runtime, prepare_database
from labcloud.services.audit import AuditScopeMiddleware
from labcloud.settings import Settings
from labcloud.telemetry import logs
from labcloud.telemetry.asgi import RequestTelemetry

log = logging.getLogger(__name__)


def _no_opentelemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry hooks, off where this FastAPI has them: labcloud's metrics are its own
    (labcloud.telemetry), and the hooks looked for a configured provider on every request."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = Runtime.create(settings)
        prepare_database(ctx)
        try:
            ctx.storage.check()
        except Exception as exc:  # reported by /readyz until it answers
            log.error("the file store (%s) cannot be reached: %s", ctx.storage.kind, exc)
        app.state.ctx = ctx
        logs.quiet_worker_calls(not settings.access_log_worker_calls)  # (uvicorn set its loggers up by now)
        if dispatch:
            ctx.start_dispatch()
        log.info("labcloud %s ready (database: %s)", __version__, ctx.db.engine.dialect.name)
        try:
            yield
        finally:
            ctx.stop_dispatch()
            ctx.db.dispose()

    app = FastAPI(
        **_no_opentelemetry(),
        title="labcloud",
        version=__version__,
        description="Run a lab's analysis tools as a web service.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by labcloud.api.docs, from vendored files under a strict CSP
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)
    app.add_middleware(AuditScopeMiddleware)  # inside the proxy headers' one: the client as it saw it
    app.add_middleware(Utf8Addresses)
    if settings.trusted_proxies:  # the client's address and scheme as the proxy saw them
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.add_middleware(RequestTelemetry)  # outermost: a request id and a count for every request
    # The worker protocol first: a fleet's heartbeats and claims are most of the requests, and a request is
    # matched against the routes in order (every route before it costs each of them a match).
    for module in (
        worker_api,
        worker_jobs,
        health,
        metrics,
        auth,
        sso,
        me,
        users,
        projects,
        apps,
        files,
        uploads,
        jobs,
        device_sessions,
        sweeps,
        webhooks,
        workers,
        devices,
        tes,
        operations,
    ):
        app.include_router(module.router)
    app.include_router(budgets.router)
    app.include_router(budgets.usage_router)
    app.include_router(devices.schemas_router)
    app.include_router(usage_stats.router)
    app.include_router(docs.router)
    web.install(app)  # the browser UI: pages, static files, HTML error pages
    openapi.install(app)  # every operation's problems, for client generators
    return app
