"""One error format for both HTTP faces: RFC 9457 problem details; and which database errors mean "busy,
try again" (the API answers them as problems, the pages as an error page)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://labcloud.dev/problems/"


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        **(extra or {}),
        "type": TYPE_BASE + (type_slug or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# PostgreSQL: serialization failure, deadlock, lock timeout: the same request can succeed a moment later.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
RETRY_AFTER_S = 1


def database_busy(exc: BaseException) -> bool:
    """A database error that says "try again": a lock held too long ("database is locked" on SQLite,
    a lock timeout, deadlock or serialization failure on PostgreSQL) or a lost connection."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database table is locked" in text


def busy_problem() -> JSONResponse:
    return problem(
        503,
        "The database is busy and this request was not carried out; nothing was changed. Try again.",
        title="Service busy",
        type_slug="busy",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
