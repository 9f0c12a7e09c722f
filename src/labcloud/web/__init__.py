"""The web UI: server-rendered pages (Jinja2) with htmx, on the same services as the API.

``install(app)`` adds the pages, the static files and HTML error pages for browser addresses.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from labcloud.web.deps import security_headers, wants_html
from labcloud.web.rendering import STATIC_DIR, error_page
from labcloud.web.routes import (
    account,
    admin,
    admin_jobs,
    admin_ops,
    admin_usage,
    apps,
    auth,
    device_sessions,
    devices,
    files,
    home,
    jobs,
    project_budget,
    projects,
    search,
    sso,
    sweeps,
    webhooks,
)


def install(app: FastAPI) -> None:
    pages = (
        auth,
        sso,
        home,
        apps,
        files,
        jobs,
        device_sessions,
        sweeps,
        projects,
        project_budget,
        account,
        webhooks,
        search,
        devices,
    )
    modules = (*pages, admin, admin_jobs, admin_usage, admin_ops)
    for module in modules:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # (asked for by every browser, whatever the page's <link> says)
        return FileResponse(
            STATIC_DIR / "favicon.svg", media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    api_handler = app.exception_handlers[StarletteHTTPException]

    async def not_found(request: Request, exc: Exception) -> Response:
        """An unknown address typed into a browser gets a page; API clients keep problem+json."""
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 404 and wants_html(request):
            settings = request.state.settings = request.app.state.ctx.settings
            response = error_page(request, 404, "Not found", "There is nothing at this address.")
            response.headers.update(security_headers(settings))
            return response
        result = api_handler(request, exc)
        return await result if inspect.isawaitable(result) else result

    app.add_exception_handler(StarletteHTTPException, not_found)
