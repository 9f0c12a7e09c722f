"""Request dependencies of the API: who is calling, with which scopes, and which page of a listing (the
runtime, settings and the database session of a request are :mod:`labcloud.request_scope`'s, re-exported
here).

Dependencies that do no I/O are ``async`` so that they run on the event loop instead of taking a trip
through the thread pool each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param

from labcloud.errors import Forbidden, Unauthorized
from labcloud.http.guard import gate, hand_over_session
from labcloud.request_scope import AppSettings, Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.security import Scope
from labcloud.services import tokens
from labcloud.services.pagination import MAX_PAGE_SIZE
from labcloud.services.tokens import Principal

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/login",
    auto_error=False,
    description="A login token from /api/v1/auth/login, or a personal API token (lc_...).",
)


def bearer_credential(request: Request) -> str | None:
    """The ``Authorization: Bearer`` credential, read the way ``oauth2_scheme`` reads it."""
    scheme, credential = get_authorization_scheme_param(request.headers.get("Authorization"))
    return credential if scheme.lower() == "bearer" and credential else None


GATE_PRINCIPAL = "labcloud_gate_principal"


def bearer_gate(request: Request, ctx: Runtime) -> None:
    """Before a body is read: the bearer credential must authenticate (401 otherwise). The session it
    was checked in becomes the request's (:func:`~labcloud.http.guard.hand_over_session`), the caller with
    it: nothing is written before the route runs, and the credential is not looked up a second time."""
    credential = bearer_credential(request)
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    session = ctx.db.sessions()
    try:
        principal = tokens.authenticate_bearer(session, ctx.settings, credential)
    except BaseException:
        session.close()
        raise
    hand_over_session(request, session)
    setattr(request.state, GATE_PRINCIPAL, (credential, session, principal))


@gate(bearer_gate)
async def get_principal(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    credential: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    """Who calls, from the bearer credential, checked against the database on every request: by the
    route's gate in this same session when it has one, else here (one trip through the thread pool)."""
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    gated = getattr(request.state, GATE_PRINCIPAL, None)
    if gated is not None and gated[0] == credential and gated[1] is session:
        principal: Principal = gated[2]
        return principal
    return await run_in_threadpool(tokens.authenticate_bearer, session, settings, credential)


def _check_scope(principal: Principal, scope: Scope) -> Principal:
    if scope == Scope.ADMIN and not principal.user.is_admin:
        raise Forbidden("This needs an administrator account.")
    if not principal.has_scope(scope):
        raise Forbidden(f"This token lacks the '{scope.value}' scope.")
    return principal


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets the request through only with ``scope`` (and, for admin, an admin account)."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return _check_scope(principal, scope)

    return check


def require_detached(scope: Scope) -> Callable[..., Principal]:
    """Like :func:`require`, for long responses (live logs): the session is closed before streaming starts,
    so a follower holds no database connection or transaction."""

    @gate(bearer_gate)
    def check(ctx: Ctx, credential: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
        if not credential:
            raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
        with ctx.db.session() as session:
            principal = tokens.authenticate_bearer(session, ctx.settings, credential)
        return _check_scope(principal, scope)

    return check


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Writer = Annotated[Principal, Depends(require(Scope.WRITE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
StreamReader = Annotated[Principal, Depends(require_detached(Scope.READ))]
StreamWriter = Annotated[Principal, Depends(require_detached(Scope.WRITE))]
# An admin request that takes long (an image pull): no database session is held while it runs.
DetachedAdmin = Annotated[Principal, Depends(require_detached(Scope.ADMIN))]

# A listing's page: ``limit: PageLimit = DEFAULT_PAGE_SIZE, cursor: PageCursor = None``.
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
PageCursor = Annotated[str | None, Query()]
