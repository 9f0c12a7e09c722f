"""Your file space: upload a raw body (`curl -T`), list a folder, download (with Range), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from labcloud.api.deps import Ctx, Reader, Writer
from labcloud.errors import InvalidInput
from labcloud.services import files

router = APIRouter(prefix="/api/v1/files", tags=["files"])


def _out(entry: files.Entry) -> dict[str, Any]:
    return {
        "path": entry.path,
        "type": entry.type,
        "size": entry.size,
        "modified_at": entry.modified_at,
        "sha256": entry.sha256,
    }


@router.get("", summary="List a folder of your space")
def list_files(principal: Reader, ctx: Ctx, prefix: str = Query("", max_length=1024)) -> dict[str, Any]:
    items = files.list_folder(ctx.settings, principal.user.id, prefix)
    return {"items": [_out(e) for e in items], "next_cursor": None}


@router.put("/{path:path}", status_code=status.HTTP_201_CREATED, summary="Upload a file (raw body)")
async def upload(path: str, request: Request, principal: Writer, ctx: Ctx) -> dict[str, Any]:
    """The body is stored as it is; the answer has its size and SHA-256. Replaces an existing file."""
    length_header = request.headers.get("content-length")
    try:
        length = int(length_header) if length_header is not None else None
    except ValueError:
        raise InvalidInput.field(["header", "content-length"], "not a number") from None
    entry = await files.upload(ctx.settings, principal.user.id, path, request.stream(), length)
    return _out(entry)


@router.get("/{path:path}", summary="Download a file")
def download(path: str, principal: Reader, ctx: Ctx) -> FileResponse:
    target = files.resolve(ctx.settings, principal.user.id, path)
    if target.is_dir():
        raise InvalidInput.field(["path", "path"], "this is a folder; list it with ?prefix=")
    return FileResponse(target, filename=target.name)


@router.delete("/{path:path}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a file or folder")
def delete(path: str, principal: Writer, ctx: Ctx) -> Response:
    files.delete(ctx.settings, principal.user.id, path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
