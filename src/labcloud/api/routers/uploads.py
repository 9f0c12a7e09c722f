"""Resumable uploads: the tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload) at /api/v1/uploads.

Extensions: creation (with upload), termination, checksum (sha1, md5, sha256) and expiration. The
destination is the ``path`` (else ``filename``) key of ``Upload-Metadata``. Every answer carries
``Tus-Resumable``; errors are problem+json like the rest of the API. The last PATCH publishes the file and
answers with its ``Labcloud-File-Path`` (percent-encoded), ``Labcloud-File-Size`` and
``Labcloud-File-Sha256``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from labcloud.api import tus
from labcloud.api.deps import Ctx, StreamReader, StreamWriter
from labcloud.api.openapi import headers_only, problems
from labcloud.errors import LabcloudError
from labcloud.runtime import Runtime
from labcloud.services import spaces, uploads
from labcloud.services.projects import Action

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"], route_class=tus.TusRoute)


def _location(request: Request, ctx: Runtime, upload_id: uuid.UUID) -> str:
    if ctx.settings.base_url:
        return f"{ctx.settings.base_url.rstrip('/')}/api/v1/uploads/{upload_id}"
    return str(request.url_for("upload_offset", upload_id=str(upload_id)))


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an empty async generator


async def _write(
    request: Request, ctx: Runtime, owner: uuid.UUID, upload_id: uuid.UUID, offset: int, body: bool
) -> uploads.Written:
    return await uploads.write(
        ctx.db,
        ctx.storage,
        ctx.settings,
        owner,
        upload_id,
        offset,
        request.stream() if body else _nothing(),
        content_length=tus.parse_content_length(request.headers.get("content-length")),
        checksum=tus.parse_checksum(request.headers.get("upload-checksum")),
    )


@router.options(
    "",
    status_code=204,
    response_class=Response,
    operation_id="get_upload_capabilities",
    responses={
        204: headers_only(
            "What this server supports.",
            Tus_Version="The tus versions: 1.0.0.",
            Tus_Extension="creation, creation-with-upload, termination, checksum, expiration.",
            Tus_Max_Size="The largest upload, in bytes.",
            Tus_Checksum_Algorithm="The checksums a chunk may carry: sha1, md5, sha256.",
        )
    },
    summary="What this tus server supports",
)
def capabilities(ctx: Ctx) -> Response:
    """Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm. No login needed."""
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=tus.capabilities(ctx.settings))


@router.options("/{upload_id}", status_code=204, include_in_schema=False)
def capabilities_of_upload(upload_id: str, ctx: Ctx) -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=tus.capabilities(ctx.settings))


@router.post(
    "",
    status_code=201,
    response_class=Response,
    operation_id="create_upload",
    responses={
        201: headers_only(
            "The upload exists; send its bytes to its Location.",
            Location="The upload's URL.",
            Upload_Offset="The bytes the server holds (those of a first chunk sent along).",
            Upload_Expires="When an unfinished upload is dropped.",
            Labcloud_File_Sha256="Once the file is stored (empty, or all of it sent along): its SHA-256.",
        ),
        **problems(400, 409, 412, 413),
    },
    summary="Start a resumable upload (tus creation)",
)
async def create(request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    """Headers: ``Upload-Length``, ``Upload-Metadata`` with ``path`` (or ``filename``), base64. The path,
    its folder and your storage room are checked now (400, 409, 413). A body with Content-Type
    ``application/offset+octet-stream`` is the first chunk (creation-with-upload)."""
    tus.check_version(request.headers.get("tus-resumable"))
    length = tus.parse_length(
        request.headers.get("upload-length"), request.headers.get("upload-defer-length")
    )
    meta = tus.parse_metadata(request.headers.get("upload-metadata"))
    path, loc = tus.destination(meta)
    owner = principal.user.id
    where = await run_in_threadpool(spaces.place, ctx.db, principal.user, path, Action.RUN, loc)
    info = await run_in_threadpool(
        uploads.create, ctx.db, ctx.settings, where.space, where.path, loc, length, meta
    )
    location = _location(request, ctx, info.id)
    headers = tus.created_headers(location, info)
    with_body = tus.is_offset_stream(request) and tus.has_body(request)
    if with_body or length == 0:
        try:
            result = await _write(request, ctx, owner, info.id, 0, with_body)
        except LabcloudError as exc:  # the upload exists all the same: say where
            exc.headers.setdefault("Location", location)
            raise
        headers.pop("Upload-Expires")
        headers.update(tus.written_headers(result))
    return Response(status_code=status.HTTP_201_CREATED, headers=headers)


@router.head(
    "/{upload_id}",
    name="upload_offset",
    response_class=Response,
    operation_id="get_upload_offset",
    responses={
        200: headers_only(
            "Where the upload stands.",
            Upload_Offset="The bytes the server holds: resume from here.",
            Upload_Length="The upload's size.",
            Upload_Expires="When it is dropped unless finished.",
            Upload_Metadata="The metadata it was created with.",
        ),
        **problems(410, 412),
    },
    summary="Where to resume an upload",
)
def offset(upload_id: str, request: Request, principal: StreamReader, ctx: Ctx) -> Response:
    """``Upload-Offset`` (bytes the server holds), ``Upload-Length``, ``Upload-Expires``, ``Upload-Metadata``.
    404 for an unknown upload (or a finished one, or another user's), 410 once expired."""
    tus.check_version(request.headers.get("tus-resumable"))
    info = uploads.describe(ctx.db, ctx.settings, principal.user.id, tus.parse_id(upload_id))
    return Response(status_code=status.HTTP_200_OK, headers=tus.offset_headers(info))


@router.patch(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    operation_id="append_to_upload",
    responses={
        204: headers_only(
            "The chunk is stored; the last one publishes the file.",
            Upload_Offset="The bytes the server holds now.",
            Labcloud_File_Path="Once the file is stored: its path in your space, percent-encoded.",
            Labcloud_File_Size="Once the file is stored: its size.",
            Labcloud_File_Sha256="Once the file is stored: its SHA-256.",
        ),
        **problems(400, 409, 410, 412, 413, 415, 460),
    },
    summary="Send the next chunk of an upload",
)
async def append(upload_id: str, request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    """``Content-Type: application/offset+octet-stream`` (else 415), ``Upload-Offset`` equal to the
    server's (else 409), optional ``Upload-Checksum`` of this chunk (460 on mismatch; the chunk is dropped).
    The bytes are on disk before the answer. The last chunk publishes the file."""
    tus.check_version(request.headers.get("tus-resumable"))
    if not tus.is_offset_stream(request):
        raise tus.UnsupportedMediaType(f"Send the chunk as Content-Type: {tus.OFFSET_CONTENT_TYPE}.")
    offset = tus.parse_offset(request.headers.get("upload-offset"))
    upload = tus.parse_id(upload_id)
    result = await _write(request, ctx, principal.user.id, upload, offset, True)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=tus.written_headers(result))


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    operation_id="terminate_upload",
    responses=problems(410, 412),
    summary="Abandon an upload (tus termination)",
)
def terminate(upload_id: str, request: Request, principal: StreamWriter, ctx: Ctx) -> Response:
    tus.check_version(request.headers.get("tus-resumable"))
    uploads.terminate(ctx.db, ctx.settings, principal.user.id, tus.parse_id(upload_id))
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
    raise tus.BadUploadRequest.field(
        ["header", "x-http-method-override"], "POST here needs X-HTTP-Method-Override: PATCH, DELETE or HEAD"
    )
