"""Request dependencies: the context, a database session, and who is calling with which scopes.

Dependencies that do no I/O are ``async`` so that they run on the event loop instead of taking a trip
through the thread pool each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from labcloud.api.context import AppContext
from labcloud.api.guard import gate
from labcloud.errors import Forbidden, Unauthorized
from labcloud.security import Scope
from labcloud.services import tokens
from labcloud.services.tokens import Principal
from labcloud.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/login",
    auto_error=False,
    description="A login token from /api/v1/auth/login, or a personal API token (lc_...).",
)


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_settings(ctx: Annotated[AppContext, Depends(get_context)]) -> Settings:
    return ctx.settings


def get_session(ctx: Annotated[AppContext, Depends(get_context)]) -> Iterator[Session]:
    """One transaction per request: committed when the handler succeeds, rolled back otherwise; before
    the answer (see ``DbSession``), so a commit that fails (a locked database) is an error answer (503,
    see :mod:`labcloud.api.errors`), never a success for a write that did not happen."""
    with ctx.db.session() as session:
        yield session


Ctx = Annotated[AppContext, Depends(get_context)]
# scope="function": the commit happens before the answer goes out. With FastAPI's default ("request") the
# code after ``yield`` runs once the response has been sent: a client could hear "201 Created" before the
# row exists (its next request not finding it) and a failing commit would reach it as a success.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]


def bearer_credential(request: Request) -> str | None:
    """The ``Authorization: Bearer`` credential, read the way ``oauth2_scheme`` reads it."""
    scheme, credential = get_authorization_scheme_param(request.headers.get("Authorization"))
    return credential if scheme.lower() == "bearer" and credential else None


def bearer_gate(request: Request, ctx: AppContext) -> None:
    """Before a body is read: the bearer credential must authenticate (401 otherwise)."""
    credential = bearer_credential(request)
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    with ctx.db.sessions() as session:  # a look only: nothing is written, nothing committed
        tokens.authenticate_bearer(session, ctx.settings, credential)


@gate(bearer_gate)
def get_principal(
    session: DbSession,
    settings: AppSettings,
    credential: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    return tokens.authenticate_bearer(session, settings, credential)


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
