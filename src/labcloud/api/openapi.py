"""How the API describes itself, so that standard generators make a good client of it: an operation id that
reads well for every route, and the ``application/problem+json`` errors every operation can answer.

Operation ids are the route functions' names (``submit_job``, ``list_jobs``); a router names a function
differently with ``operation_id=`` where its name alone would not say enough (``submit`` of the jobs
router), and the worker protocol's operations are ``worker_*`` (they are a client of their own). Every
operation declares the ``Problem`` schema for its errors: ``default`` for any status, and the statuses
that follow from the operation itself (401 where it takes a bearer credential, 403 where that is a user's
token with scopes, 400 where a path of your space is in its address, 404 where it names something in its
path, 422 where it takes input, 413 where it has a body); a router adds those only it knows (409, 429,
...) with ``responses=problems(...)``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from labcloud.http.problems import PROBLEM_JSON

WORKER_PROTOCOL = "/api/v1/worker/"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
BINARY = {"type": "string", "format": "binary"}

DESCRIPTIONS: dict[int | str, str] = {
    400: "Malformed: a path that is not a plain path in your space, a header that does not parse.",
    401: "No credential, or one that is not valid (any more).",
    403: "The credential may not do this: a token without the scope, or not an administrator's.",
    404: "There is no such thing, or it is another user's.",
    409: "It clashes with the current state.",
    410: "It has expired.",
    412: "An unsupported version of the protocol (Tus-Resumable).",
    413: "Too large: the body, the upload, or more than is left of your storage limit (the detail says).",
    415: "The body's Content-Type is not the one this takes.",
    422: "Invalid input; `errors` names each field at fault.",
    429: "Too many tries; Retry-After says when to try again.",
    460: "The chunk's checksum does not match its bytes; it was not kept.",
    503: "Not now: the database or the file store cannot be reached, or the database is busy (Retry-After).",
    "default": "Any other error, e.g. 503 with Retry-After when the database is busy (nothing was changed).",
}


class ProblemField(BaseModel):
    """A field at fault."""

    loc: list[str | int] = Field(description="Where: body, query, path or header, then the field's path.")
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(description="A URL naming the kind of problem, e.g. .../problems/not-found.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, in words.")
    errors: list[ProblemField] | None = Field(None, description="For invalid input: each field at fault.")


def problems(*statuses: int | str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these statuses with a problem."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = DESCRIPTIONS.get(status) or HTTPStatus(int(status)).phrase
        out[status] = {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}}
    return out


def binary(media_type: str = "application/octet-stream", description: str = "The bytes.") -> dict[str, Any]:
    """A success answer of bytes (a file, a zip)."""
    return {"description": description, "content": {media_type: {"schema": BINARY}}}


def file_download_responses() -> dict[int | str, dict[str, Any]]:
    """The answers of a file download: the bytes, a range of them, not modified, or (S3) a redirect."""
    return {
        200: binary(description="The file's bytes; its ETag is its SHA-256."),
        206: binary(description="The bytes of the Range asked for."),
        304: {"description": "Not modified: If-None-Match named its ETag."},
        307: {"description": "With S3 storage: the file's short-lived presigned URL (Location)."},
    }


def headers_only(description: str, **headers: str) -> dict[str, Any]:
    """A success answer whose news is in its headers (tus), each described."""
    return {
        "description": description,
        "headers": {
            name.replace("_", "-"): {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        },
    }


def operation_id(route: APIRoute) -> str:
    """The id of a route's operation: its function's name (``worker_`` first for the worker protocol)."""
    return ("worker_" if route.path_format.startswith(WORKER_PROTOCOL) else "") + route.name


def statuses(path: str, operation: dict[str, Any]) -> list[int | str]:
    """The problem statuses that follow from an operation itself."""
    found: list[int | str] = ["default"]
    if operation.get("security"):  # it takes a bearer credential
        found.append(401)
        if not path.startswith(WORKER_PROTOCOL):  # a user's token: its scopes, an admin's account
            found.append(403)
    if "{path}" in path:  # a path in your space
        found.append(400)
    parameters = operation.get("parameters") or []
    if any(p.get("in") == "path" for p in parameters):
        found.append(404)
    if operation.get("requestBody"):
        found.append(413)
    if parameters or operation.get("requestBody"):
        found.append(422)
    return found


def declare_problems(document: dict[str, Any]) -> None:
    """Give every operation its problems (what a router declared stays, but FastAPI's own 422, which this
    API never answers, makes way for the problem it does answer)."""
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if _fastapi_validation_error(answers.get("422")):
                del answers["422"]
            for status, response in problems(*statuses(path, operation)).items():
                answers.setdefault(str(status), response)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem


def _fastapi_validation_error(response: dict[str, Any] | None) -> bool:
    schema = ((response or {}).get("content") or {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare every operation's problems."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = generate()
        if fresh or "Problem" not in document.get("components", {}).get("schemas", {}):
            declare_problems(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
