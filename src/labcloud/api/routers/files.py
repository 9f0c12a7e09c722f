"""Your files and your projects': list, upload (raw body or form), download (Range, ETag, folders as zip),
move, delete, and uploads that go straight to S3 storage through presigned part URLs. A path
``projects/<slug>/...`` is in that project's space (:mod:`labcloud.services.spaces`), any other in yours."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import Ctx, DbSession, PageLimit, Reader, StreamReader, StreamWriter, Writer
from labcloud.api.openapi import BINARY, file_download_responses, problems
from labcloud.errors import InvalidInput
from labcloud.http.downloads import send_file, send_zip
from labcloud.http.guard import GuardedRoute
from labcloud.services import direct_uploads, file_store, maintenance, projects, spaces
from labcloud.services import files as file_service
from labcloud.services.pagination import DEFAULT_PAGE_SIZE
from labcloud.services.projects import Action

router = APIRouter(prefix="/api/v1", tags=["files"], route_class=GuardedRoute)


class FileOut(BaseModel):
    path: str
    type: str = Field(description="file or folder")
    size: int
    modified_at: Any
    sha256: str | None = None
    job_id: uuid.UUID | None = Field(None, description="The job that wrote this file, for job outputs.")


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None = None


class MoveIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", max_length=2048, description="The file or folder to move.")
    to: str = Field(max_length=2048, description="Its new path; must not exist yet.")


class UsageOut(BaseModel):
    used_bytes: int
    limit_bytes: int | None = Field(description="null: no limit")
    available_bytes: int | None


def _out(entry: file_service.Entry) -> FileOut:
    return FileOut(**entry.__dict__)


@router.get("/files", response_model=FilePage, summary="List a folder of your space or a project's")
def list_files(
    principal: Reader,
    session: DbSession,
    prefix: str = Query(
        "",
        max_length=2048,
        description="Folder to list; empty for the top (which shows 'projects': your projects' files).",
    ),
    cursor: str | None = Query(None, max_length=2000),
    limit: PageLimit = DEFAULT_PAGE_SIZE,
) -> FilePage:
    items, next_cursor = spaces.list_folder(session, principal.user, prefix, limit=limit, cursor=cursor)
    return FilePage(items=[_out(e) for e in items], next_cursor=next_cursor)


@router.get(
    "/me/storage",
    response_model=UsageOut,
    operation_id="get_storage_usage",
    summary="How much of your storage limit you use",
)
def storage_usage(principal: Reader, session: DbSession, ctx: Ctx) -> UsageOut:
    """Your personal space's; a project's is in the project's storage_used_bytes."""
    used, limit = file_service.usage(session, ctx.settings, projects.personal(session, principal.user).id)
    return UsageOut(
        used_bytes=used, limit_bytes=limit, available_bytes=None if limit is None else max(limit - used, 0)
    )


@router.post(
    "/files:move",
    response_model=FileOut,
    operation_id="move_file",
    responses=problems(409),
    summary="Move or rename a file or folder",
)
def move(body: MoveIn, principal: Writer, ctx: Ctx) -> FileOut:
    """Within one space: between your space and a project's (or two projects'), download and upload."""
    with ctx.db.session() as session:
        source = spaces.locate(session, principal.user, body.from_, Action.RUN, ["body", "from"])
        target = spaces.locate(session, principal.user, body.to, Action.RUN, ["body", "to"])
    if source.space.project_id != target.space.project_id:
        raise InvalidInput.field(["body", "to"], "a move stays in one space (yours, or one project's)")
    return _out(target.shown(file_service.move(ctx.db, source.space, source.path, target.path)))


class FolderIn(BaseModel):
    path: str = Field(max_length=2048, description="The new folder, e.g. data/2026-12 or projects/SLUG/raw.")


@router.post(
    "/files:mkdir",
    status_code=status.HTTP_201_CREATED,
    response_model=FileOut,
    operation_id="make_folder",
    responses=problems(409),
    summary="Make an empty folder",
)
def make_folder(body: FolderIn, principal: Writer, ctx: Ctx) -> FileOut:
    """The folders above it are made too when missing; a name already taken is 409."""
    with ctx.db.session() as session:
        where = spaces.locate(session, principal.user, body.path, Action.RUN, ["body", "path"])
    return _out(where.shown(file_service.make_folder(ctx.db, where.space, where.path, ["body", "path"])))


@router.put(
    "/files/{path:anypath}",
    status_code=status.HTTP_201_CREATED,
    response_model=FileOut,
    operation_id="upload_file",
    responses=problems(413),
    summary="Upload a file (raw body, or a multipart form with one file)",
)
async def upload(path: str, request: Request, principal: StreamWriter, ctx: Ctx) -> FileOut:
    """The body is stored as it is (`curl -T`); the answer has its size and SHA-256. Replaces a file.

    Nothing is visible until the whole body has arrived; a refused or broken upload stores nothing.
    """
    await run_in_threadpool(maintenance.refuse_new_work, ctx.db.engine)
    where = await run_in_threadpool(spaces.place, ctx.db, principal.user, path, Action.RUN, ["path", "path"])
    owner = where.space
    target = file_service.clean(where.path, ["path", "path"])
    length = _content_length(request)
    await run_in_threadpool(file_service.check_target, ctx.db, owner, target, ["path", "path"])
    if length is not None:
        await run_in_threadpool(file_store.check_room, ctx.db, ctx.settings, owner, length, target)
    room = await run_in_threadpool(file_store.room_left, ctx.db, ctx.settings, owner, target)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        source, size, sha256 = await _receive_form(request, ctx, room)
    else:
        source, size, sha256 = await file_store.receive(ctx.settings, request.stream(), length, room)
    entry = await run_in_threadpool(
        file_store.publish, ctx.db, ctx.storage, ctx.settings, owner, target, source, size, sha256
    )
    return _out(where.shown(entry))


def _content_length(request: Request) -> int | None:
    header = request.headers.get("content-length")
    if header is None or request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None
    try:
        return int(header)
    except ValueError:
        raise InvalidInput.field(["header", "content-length"], "not a number") from None


async def _receive_form(request: Request, ctx: Ctx, room: int | None) -> Any:
    form = await request.form(max_files=1, max_fields=10)
    try:
        uploads = [v for v in form.values() if not isinstance(v, str)]
        if not uploads:
            raise InvalidInput.field(["body", "file"], "the form has no file")

        async def chunks() -> Any:
            while chunk := await uploads[0].read(1 << 20):
                yield chunk

        return await file_store.receive(ctx.settings, chunks(), None, room)
    finally:
        await form.close()


@router.get(
    "/files/{path:anypath}",
    response_class=Response,
    operation_id="download_file",
    responses={
        **file_download_responses(),
        200: {
            "description": "The file's bytes (its ETag is its SHA-256), or a folder as a zip.",
            "content": {
                "application/octet-stream": {"schema": BINARY},
                "application/zip": {"schema": BINARY},
            },
        },
    },
    summary="Download a file, or a folder as a zip",
)
def download(path: str, request: Request, principal: StreamReader, ctx: Ctx) -> Response:
    """Files support `Range` and `If-None-Match` (the ETag is the SHA-256). With S3 storage the answer is
    a redirect to a short-lived presigned URL. A folder comes as a zip built while it streams."""
    with ctx.db.session() as session:  # closed before the bytes flow
        where = spaces.locate(session, principal.user, path, Action.READ, ["path", "path"])
        row = file_service.get(session, where.space, where.path, ["path", "path"])
        if row.kind == file_service.FILE:
            return send_file(ctx, request, row)
        rows = file_service.files_under(session, where.space, row.path)
    return send_zip(ctx.storage, rows, row.path, f"{row.name}.zip")


@router.delete(
    "/files/{path:anypath}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_file",
    summary="Delete a file or folder",
)
def delete(path: str, principal: Writer, ctx: Ctx) -> Response:
    where = spaces.place(ctx.db, principal.user, path, Action.RUN, ["path", "path"])
    file_service.delete_path(ctx.db, ctx.storage, where.space, where.path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------------------- direct (S3) uploads


class DirectUploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=2048)
    size: int = Field(ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="Checked on completion.")
    part_size: int | None = Field(None, ge=5 * 2**20, le=5 * 2**30, description="Default: 64 MiB.")


class PartUrlOut(BaseModel):
    part_number: int
    url: str


class DirectUploadOut(BaseModel):
    id: uuid.UUID
    path: str
    size: int
    part_size: int
    parts: list[PartUrlOut]
    expires_at: Any


class PartIn(BaseModel):
    part_number: int = Field(ge=1, le=10000)
    etag: str = Field(max_length=200)


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[PartIn] = Field(min_length=1, max_length=10000)


@router.post(
    "/direct-uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=DirectUploadOut,
    responses=problems(409),
    summary="Start an upload straight to S3 storage: presigned URLs, one per part",
)
def start_direct_upload(body: DirectUploadIn, principal: Writer, ctx: Ctx) -> DirectUploadOut:
    """PUT each part's bytes to its URL, keep each answer's ETag, then complete. 409 on local storage."""
    where = spaces.place(ctx.db, principal.user, body.path, Action.RUN, ["body", "path"])
    started = direct_uploads.start(
        ctx.db,
        ctx.storage,
        ctx.settings,
        where.space,
        where.path,
        body.size,
        body.sha256,
        body.part_size,
    )
    return DirectUploadOut(**{**started, "path": where.prefix + started["path"]})


@router.post(
    "/direct-uploads/{upload_id}/complete",
    response_model=FileOut,
    summary="Finish a direct upload: the server checks size and checksum, then publishes the file",
)
def complete_direct_upload(upload_id: uuid.UUID, body: CompleteIn, principal: Writer, ctx: Ctx) -> FileOut:
    entry = direct_uploads.complete(
        ctx.db,
        ctx.storage,
        ctx.settings,
        principal.user.id,
        upload_id,
        [(p.part_number, p.etag) for p in body.parts],
    )
    assert entry.project_id is not None  # (an entry of a row)
    with ctx.db.session() as session:
        prefix = spaces.prefix_of(session, entry.project_id)
    return _out(dataclasses.replace(entry, path=prefix + entry.path))


@router.delete(
    "/direct-uploads/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Abandon a direct upload",
)
def abort_direct_upload(upload_id: uuid.UUID, principal: Writer, ctx: Ctx) -> Response:
    direct_uploads.abort(ctx.db, ctx.storage, principal.user.id, upload_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
