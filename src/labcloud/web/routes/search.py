"""Search: apps, your jobs and your projects' files from one box in the page's header."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from labcloud.request_scope import Ctx, DbSession
from labcloud.services import search as search_service
from labcloud.web.deps import PageRoute, PageUser
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/search")
def search(
    request: Request,
    principal: PageUser,
    session: DbSession,
    ctx: Ctx,
    q: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    found = search_service.search(session, ctx.apps, principal.user, q)
    return render(request, "search.html", {"q": q.strip(), "found": found})
