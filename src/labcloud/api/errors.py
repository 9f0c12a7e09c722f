"""One error format for the whole API: RFC 9457 problem details (:mod:`labcloud.http.problems`)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from labcloud.errors import LabcloudError
from labcloud.http.problems import busy_problem, database_busy, problem

log = logging.getLogger(__name__)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [part for part in err.get("loc", ()) if part != "body" or len(err.get("loc", ())) == 1]
        out.append({"loc": loc, "msg": err.get("msg", "invalid"), "type": err.get("type", "value_error")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LabcloudError)
    async def _domain(_request: Request, exc: LabcloudError) -> JSONResponse:
        return problem(
            exc.status,
            exc.detail,
            title=exc.title,
            type_slug=exc.type_slug,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
        return problem(
            422,
            f"The request is not valid: {fields}." if fields else "The request is not valid.",
            title="Invalid input",
            type_slug="validation-error",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        """A write that did not commit is never answered as done: 503 when trying again can help."""
        if database_busy(exc):
            log.warning("database busy: %s", exc.orig)
            return busy_problem()
        log.exception("database error", exc_info=exc)
        return problem(500, "An internal error occurred; it has been logged.")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "An internal error occurred; it has been logged.")
