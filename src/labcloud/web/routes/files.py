"""The file browser: folders, uploads (the page's script speaks tus to /api/v1/uploads), downloads,
renames and deletes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse

from labcloud.api.downloads import send_file, send_zip
from labcloud.errors import LabcloudError
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import files, tokens
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, StreamUser, redirect
from labcloud.web.rendering import path_url, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 100


def _crumbs(folder: str) -> list[tuple[str, str]]:
    """(name, path) of each folder from the top down to ``folder``."""
    parts = folder.split("/") if folder else []
    return [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


def _folder_url(folder: str) -> str:
    return f"/files?path={path_url(folder)}" if folder else "/files"


def _listing(
    principal: PageUser, session: DbSession, ctx: Ctx, path: str = "", cursor: str | None = None
) -> dict[str, Any]:
    """A page of the folder ``?path=`` (from ``?cursor=``) and the user's storage use: what the file
    browser and its table show."""
    folder = files.clean(path, ["query", "path"]) if path.strip("/") else ""
    entries, next_cursor = files.list_folder(
        session, principal.user.id, folder, limit=PAGE_SIZE, cursor=cursor
    )
    used, limit = files.usage(session, ctx.settings, principal.user.id)
    return {
        "folder": folder,
        "crumbs": _crumbs(folder),
        "entries": entries,
        "next_cursor": next_cursor,
        "cursor": cursor,
        "used": used,
        "limit": limit,
    }


Listing = Annotated[dict[str, Any], Depends(_listing)]


@router.get("/files")
def browse(request: Request, page: Listing) -> Response:
    return render(request, "files.html", page)


@router.get("/files/listing")
def listing(request: Request, page: Listing) -> Response:
    """The folder's table alone: htmx swaps it in after uploads."""
    return render(request, "partials/file_table.html", page)


@router.get("/files/download/{path:anypath}")
def download(path: str, request: Request, principal: StreamUser, ctx: Ctx) -> Response:
    """A file (Range, ETag), or a folder as a zip streamed while it is built; the API's download, with
    the browser's session."""
    with ctx.db.session() as session:
        row = files.get(session, principal.user.id, path, ["path"])
        if row.kind == files.FILE:
            return send_file(ctx, request, row)
        rows = files.files_under(session, principal.user.id, row.path)
    return send_zip(ctx.storage, rows, row.path, f"{row.name}.zip")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@router.post("/files/delete")
def delete(principal: FormUser, ctx: Ctx, path: Annotated[str, Form(max_length=2048)]) -> Response:
    clean = files.clean(path, ["body", "path"])
    count = files.delete_path(ctx.db, ctx.storage, principal.user.id, clean)
    response = redirect(_folder_url(_parent(clean)))
    what = f"'{clean}'" if count <= 1 else f"'{clean}' and the {count} files in it"
    web_session.flash(response, ctx.settings, f"Deleted {what}.")
    return response


@router.post("/files/move")
def move(
    principal: FormUser,
    ctx: Ctx,
    from_: Annotated[str, Form(alias="from", max_length=2048)],
    to: Annotated[str, Form(max_length=2048)],
) -> Response:
    """Rename or move. A bare new name (no slash) stays in the same folder."""
    source = files.clean(from_, ["body", "from"])
    target = to.strip()
    if "/" not in target and _parent(source):
        target = f"{_parent(source)}/{target}"
    try:
        entry = files.move(ctx.db, principal.user.id, source, target)
    except LabcloudError as exc:
        response = redirect(_folder_url(_parent(source)))
        web_session.flash(response, ctx.settings, f"Could not rename '{source}': {exc.detail}", "bad")
        return response
    response = redirect(_folder_url(_parent(entry.path)))
    web_session.flash(response, ctx.settings, f"Renamed '{source}' to '{entry.path}'.")
    return response


@router.post("/ui/token")
def upload_token(principal: FormUser, ctx: Ctx) -> Response:
    """A short-lived login token for the page's own calls to the API (resumable uploads send it as a
    Bearer header). Only for this site's pages: the request must carry the session's CSRF token. The
    token ends with the session (logout)."""
    token, lifetime = tokens.login_token(principal.user, ctx.settings, session_id=principal.session_id)
    return JSONResponse(
        {"access_token": token, "expires_in": lifetime}, headers={"Cache-Control": "no-store"}
    )
