"""Resumable uploads: the tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload) at /api/v1/uploads.

Extensions: creation (with upload), termination, checksum (sha1, md5, sha256) and expiration. The
destination is the ``path`` (else ``filename``) key of ``Upload-Metadata``. Every answer carries
``Tus-Resumable``; errors are problem+json like the rest of the API. The last PATCH publishes the file and
answers with its ``Labcloud-File-Path`` (percent-encoded), ``Labcloud-File-Size`` and
``Labcloud-File-Sha256``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from labcloud.api.context import AppContext
from labcloud.api.deps import Ctx, StreamReader, StreamWriter
from labcloud.api.errors import PROBLEM_JSON, TYPE_BASE
from labcloud.errors import LabcloudError
from labcloud.services import uploads
from labcloud.services.uploads import TUS_VERSION


def _problem(exc: LabcloudError) -> Response:
    """problem+json for any status, including tus's 460 (which ``http.HTTPStatus`` does not know)."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + exc.type_slug,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    if exc.errors is not None:
        body["errors"] = exc.errors
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=exc.headers)


class TusRoute(APIRoute):
    """Adds ``Tus-Resumable`` to every answer, errors (also the authentication's) included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LabcloudError as exc:
                response = _problem(exc)
            response.headers["Tus-Resumable"] = TUS_VERSION
            response.headers["Cache-Control"] = "no-store"
            return response

        return tus_handler


router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"], route_class=TusRoute)


def _capabilities(ctx: AppContext) -> dict[str, str]:
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(uploads.TUS_EXTENSIONS),
        "Tus-Max-Size": str(ctx.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(uploads.CHECKSUMS),
    }


def _location(request: Request, ctx: AppContext, upload_id: uuid.UUID) -> str:
    if ctx.settings.base_url:
        return f"{ctx.settings.base_url.rstrip('/')}/api/v1/uploads/{upload_id}"
    return str(request.url_for("upload_offset", upload_id=str(upload_id)))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def _is_offset_stream(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == uploads.OFFSET_CONTENT_TYPE


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an empty async generator


def _written_headers(result: uploads.Written) -> dict[str, str]:
    headers = {"Upload-Offset": str(result.offset)}
    if result.entry is not None:
        headers["Labcloud-File-Path"] = quote(result.entry.path, safe="/")
        headers["Labcloud-File-Size"] = str(result.entry.size)
        headers["Labcloud-File-Sha256"] = result.entry.sha256 or ""
    elif result.expires_at is not None:
        headers["Upload-Expires"] = uploads.http_date(result.expires_at)
    return headers


async def _write(
    request: Request, ctx: AppContext, owner: uuid.UUID, upload_id: uuid.UUID, offset: int, body: bool
) -> uploads.Written:
    return await uploads.write(
        ctx.db,
        ctx.storage,
        ctx.settings,
        owner,
        upload_id,
        offset,
        request.stream() if body else _nothing(),
        content_length=uploads.parse_content_length(request.headers.get("content-length")),
        checksum=uploads.parse_checksum(request.headers.get("upload-checksum")),
    )


@router.options("", status_code=204, summary="What this tus server supports")
def capabilities(ctx: Ctx) -> Response:
    """Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm. No login needed."""
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_capabilities(ctx))


@router.options("/{upload_id}", status_code=204, include_in_schema=False)
def capabilities_of_upload(upload_id: str, ctx: Ctx) -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_capabilities(ctx))


@router.post("", status_code=201, summary="Start a resumable upload (tus creation)")
async def create(request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    """Headers: ``Upload-Length``, ``Upload-Metadata`` with ``path`` (or ``filename``), base64. The path,
    its folder and your storage room are checked now (400, 409, 413). A body with Content-Type
    ``application/offset+octet-stream`` is the first chunk (creation-with-upload)."""
    uploads.check_version(request.headers.get("tus-resumable"))
    length = uploads.parse_length(
        request.headers.get("upload-length"), request.headers.get("upload-defer-length")
    )
    meta = uploads.parse_metadata(request.headers.get("upload-metadata"))
    owner = principal.user.id
    info = await run_in_threadpool(uploads.create, ctx.db, ctx.settings, owner, length, meta)
    location = _location(request, ctx, info.id)
    headers = {
        "Location": location,
        "Upload-Offset": "0",
        "Upload-Expires": uploads.http_date(info.expires_at),
    }
    with_body = _is_offset_stream(request) and _has_body(request)
    if with_body or length == 0:
        try:
            result = await _write(request, ctx, owner, info.id, 0, with_body)
        except LabcloudError as exc:  # the upload exists all the same: say where
            exc.headers.setdefault("Location", location)
            raise
        headers.pop("Upload-Expires")
        headers.update(_written_headers(result))
    return Response(status_code=status.HTTP_201_CREATED, headers=headers)


@router.head("/{upload_id}", name="upload_offset", summary="Where to resume an upload")
def offset(upload_id: str, request: Request, principal: StreamReader, ctx: Ctx) -> Response:
    """``Upload-Offset`` (bytes the server holds), ``Upload-Length``, ``Upload-Expires``, ``Upload-Metadata``.
    404 for an unknown upload (or a finished one, or another user's), 410 once expired."""
    uploads.check_version(request.headers.get("tus-resumable"))
    info = uploads.describe(ctx.db, ctx.settings, principal.user.id, uploads.parse_id(upload_id))
    headers = {
        "Upload-Offset": str(info.offset),
        "Upload-Length": str(info.length),
        "Upload-Expires": uploads.http_date(info.expires_at),
    }
    if info.meta:
        headers["Upload-Metadata"] = uploads.encode_metadata(info.meta)
    return Response(status_code=status.HTTP_200_OK, headers=headers)


@router.patch("/{upload_id}", status_code=204, summary="Send the next chunk of an upload")
async def append(upload_id: str, request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    """``Content-Type: application/offset+octet-stream`` (else 415), ``Upload-Offset`` equal to the
    server's (else 409), optional ``Upload-Checksum`` of this chunk (460 on mismatch; the chunk is dropped).
    The bytes are on disk before the answer. The last chunk publishes the file."""
    uploads.check_version(request.headers.get("tus-resumable"))
    if not _is_offset_stream(request):
        raise uploads.UnsupportedMediaType(f"Send the chunk as Content-Type: {uploads.OFFSET_CONTENT_TYPE}.")
    offset = uploads.parse_offset(request.headers.get("upload-offset"))
    upload = uploads.parse_id(upload_id)
    result = await _write(request, ctx, principal.user.id, upload, offset, True)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=_written_headers(result))


@router.delete("/{upload_id}", status_code=204, summary="Abandon an upload (tus termination)")
def terminate(upload_id: str, request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    uploads.check_version(request.headers.get("tus-resumable"))
    uploads.terminate(ctx.db, ctx.settings, principal.user.id, uploads.parse_id(upload_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{upload_id}", include_in_schema=False)
async def method_override(upload_id: str, request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    """For clients behind proxies that only pass GET and POST: ``X-HTTP-Method-Override``."""
    method = request.headers.get("x-http-method-override", "").strip().upper()
    if method == "PATCH":
        return await append(upload_id, request, principal, ctx)
    if method == "DELETE":
        return await run_in_threadpool(terminate, upload_id, request, principal, ctx)
    if method == "HEAD":
        return await run_in_threadpool(offset, upload_id, request, principal, ctx)
    raise uploads.BadUploadRequest.field(
        ["header", "x-http-method-override"], "POST here needs X-HTTP-Method-Override: PATCH, DELETE or HEAD"
    )
