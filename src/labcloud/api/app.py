"""The ASGI application."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from labcloud import __version__, web
from labcloud.api import docs
from labcloud.api.context import AppContext
from labcloud.api.errors import install_error_handlers
from labcloud.api.guard import Utf8Addresses
from labcloud.api.routers import apps, auth, files, health, jobs, me, uploads, users, worker_api, workers
from labcloud.db import migrate
from labcloud.services import users as user_service
from labcloud.settings import Settings

log = logging.getLogger(__name__)


class SchemaOutOfDate(RuntimeError):
    pass


def prepare_database(ctx: AppContext) -> None:
    """SQLite is migrated on start; PostgreSQL must be migrated explicitly with ``labcloud db upgrade``."""
    if ctx.settings.is_sqlite:
        migrate.upgrade(ctx.settings)
    elif not migrate.is_up_to_date(ctx.settings, ctx.db.engine):
        raise SchemaOutOfDate(
            "The database schema is not up to date: run 'labcloud db upgrade' with the same configuration."
        )
    with ctx.db.session() as session:
        admin = user_service.ensure_initial_admin(session, ctx.settings)
    if admin is not None:
        announce_initial_admin(admin, ctx.settings)


def database_location(settings: Settings) -> str:
    """Where the accounts and jobs are kept, for people: the SQLite file, or the URL without its password."""
    url = make_url(settings.effective_database_url)
    if settings.is_sqlite and url.database:
        return url.database
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)


def announce_initial_admin(admin: user_service.InitialAdmin, settings: Settings) -> None:
    """Printed once, to the console and not to the log, when the first admin is created."""
    lines = ["", "labcloud: created the first administrator account.", f"  email:    {admin.email}"]
    if admin.password is not None:
        lines.append(f"  password: {admin.password}")
    else:
        lines.append("  password: the initial_admin_password of your configuration")
    lines += [
        f"  data dir: {settings.home}",
        f"  database: {database_location(settings)}",
        f"  log in at {settings.public_url}/docs (Authorize) or with 'labcloud login'.",
        "  Change the password after logging in; this message is not shown again.",
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = AppContext.create(settings)
        prepare_database(ctx)
        try:
            ctx.storage.check()
        except Exception as exc:  # reported by /readyz until it answers
            log.error("the file store (%s) cannot be reached: %s", ctx.storage.kind, exc)
        app.state.ctx = ctx
        if dispatch:
            ctx.start_dispatch()
        log.info("labcloud %s ready (database: %s)", __version__, ctx.db.engine.dialect.name)
        try:
            yield
        finally:
            ctx.stop_dispatch()
            ctx.db.dispose()

    app = FastAPI(
        title="labcloud",
        version=__version__,
        description="Run a lab's analysis tools as a web service.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by labcloud.api.docs, from vendored files under a strict CSP
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(Utf8Addresses)
    if settings.trusted_proxies:  # the client's address and scheme as the proxy saw them
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    for module in (health, auth, me, users, apps, files, uploads, jobs, workers, worker_api):
        app.include_router(module.router)
    app.include_router(docs.router)
    web.install(app)  # the browser UI: pages, static files, HTML error pages
    return app
