"""The file browser: folders, uploads (the page's script speaks tus to /api/v1/uploads), downloads,
renames and deletes; in the user's space and, under ``projects/<slug>/``, in their projects'
(:mod:`labcloud.services.spaces`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse

from labcloud.db.models import User
from labcloud.errors import InvalidInput, LabcloudError
from labcloud.http.downloads import send_file, send_zip
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import files, projects, spaces, storage_limits, tokens
from labcloud.services.projects import Action
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
    """A page of the folder ``?path=`` (from ``?cursor=``) and the storage use of its space (the user's,
    or the project's): what the file browser and its table show."""
    user = principal.user
    folder = files.clean(path, ["query", "path"]) if path.strip("/") else ""
    entries, next_cursor = spaces.list_folder(session, user, folder, limit=PAGE_SIZE, cursor=cursor)
    if spaces.is_projects_folder(folder):
        space_id = projects.personal(session, user).id
    else:
        space_id = spaces.locate(session, user, folder, Action.READ, ["query", "path"]).space.project_id
    used, limit = storage_limits.usage(session, ctx.settings, space_id)
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
    """The folder's table alone, and the storage line beside it: htmx swaps both in after uploads."""
    return render(request, "partials/file_table.html", {**page, "refreshed": True})


@router.get("/files/download/{path:anypath}")
def download(path: str, request: Request, principal: StreamUser, ctx: Ctx) -> Response:
    """A file (Range, ETag), or a folder as a zip streamed while it is built; the API's download, with
    the browser's session."""
    with ctx.db.session() as session:
        where = spaces.locate(session, principal.user, path, Action.READ, ["path"])
        row = files.get(session, where.space, where.path, ["path"])
        if row.kind == files.FILE:
            return send_file(ctx, request, row)
        rows = files.files_under(session, where.space, row.path)
    return send_zip(ctx.storage, rows, row.path, f"{row.name}.zip")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@router.post("/files/delete")
def delete(principal: FormUser, ctx: Ctx, path: Annotated[str, Form(max_length=2048)]) -> Response:
    clean = files.clean(path, ["body", "path"])
    where = spaces.place(ctx.db, principal.user, clean, Action.RUN, ["body", "path"])
    count = files.delete_path(ctx.db, ctx.storage, where.space, where.path)
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
        entry = _move(ctx, principal.user, source, target)
    except LabcloudError as exc:
        response = redirect(_folder_url(_parent(source)))
        web_session.flash(response, ctx.settings, f"Could not rename '{source}': {exc.detail}", "bad")
        return response
    response = redirect(_folder_url(_parent(entry.path)))
    web_session.flash(response, ctx.settings, f"Renamed '{source}' to '{entry.path}'.")
    return response


def _move(ctx: Ctx, user: User, source: str, target: str) -> files.Entry:
    """A rename within one space, paths as the user sees them."""
    from_ = spaces.place(ctx.db, user, source, Action.RUN, ["body", "from"])
    to = spaces.place(ctx.db, user, target, Action.RUN, ["body", "to"])
    if from_.space.project_id != to.space.project_id:
        raise InvalidInput.field(["body", "to"], "a move stays in one space (yours, or one project's)")
    return to.shown(files.move(ctx.db, from_.space, from_.path, to.path))


@router.post("/ui/token")
def upload_token(principal: FormUser, ctx: Ctx) -> Response:
    """A short-lived login token for the page's own calls to the API (resumable uploads send it as a
    Bearer header). Only for this site's pages: the request must carry the session's CSRF token. The
    token ends with the session (logout)."""
    token, lifetime = tokens.login_token(principal.user, ctx.settings, session_id=principal.session_id)
    return JSONResponse(
        {"access_token": token, "expires_in": lifetime}, headers={"Cache-Control": "no-store"}
    )
