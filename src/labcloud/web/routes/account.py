"""Your account: password change and personal API tokens (the secret is shown once, with a copy button)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy.orm import Session

from labcloud.db.types import utcnow
from labcloud.errors import Forbidden, InvalidInput
from labcloud.request_scope import Ctx, DbSession
from labcloud.security import ALL_SCOPES, Scope
from labcloud.services import tokens, users
from labcloud.services.tokens import Principal
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, PageUser, redirect
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _page(
    request: Request, session: Session, principal: Principal, ctx: Any, status: int = 200, **extra: Any
) -> Response:
    page = tokens.list_api_tokens(session, principal.user, limit=200, cursor=None)
    context: dict[str, Any] = {
        "tokens": page.items,
        "scopes": [s.value for s in ALL_SCOPES if s != Scope.ADMIN or principal.user.is_admin],
        "max_days": ctx.settings.api_token_max_days,
        "min_password_length": ctx.settings.min_password_length,
        "errors": {},
        "created": None,
        **extra,
    }
    return render(request, "account.html", context, status)


def _field_errors(exc: InvalidInput) -> dict[str, str]:
    errors = {}
    for error in exc.errors or [{"loc": [], "msg": exc.detail}]:
        loc = [str(p) for p in error.get("loc", [])]
        errors[loc[-1] if loc else "form"] = str(error.get("msg", exc.detail))
    return errors


@router.get("/account")
def account(request: Request, principal: PageUser, session: DbSession, ctx: Ctx) -> Response:
    return _page(request, session, principal, ctx)


@router.post("/account/password")
def change_password(
    request: Request,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    current_password: Annotated[str, Form(max_length=1000)] = "",
    new_password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        users.change_password(
            session,
            ctx.settings,
            principal.user,
            current_password=current_password,
            new_password=new_password,
        )
    except InvalidInput as exc:
        return _page(request, session, principal, ctx, 422, errors=_field_errors(exc))
    # The change ends every session of the account, this one too: carry on with a new one.
    request.state.renewed = web_session.start(
        session, principal.user, ctx.settings, request.state.browser.csrf
    )
    response = redirect("/account")
    web_session.flash(response, ctx.settings, "Your password is changed. Other browser sessions have ended.")
    return response


@router.post("/account/tokens")
def create_token(
    request: Request,
    principal: FormUser,
    session: DbSession,
    ctx: Ctx,
    name: Annotated[str, Form(max_length=100)] = "",
    scopes: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    days: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Rendered directly (not redirected) so that the secret is never in a URL or a later page."""
    errors: dict[str, str] = {}
    if not name.strip():
        errors["name"] = "give the token a name, e.g. the machine or script that will use it"
    chosen = [Scope(s) for s in scopes if s in {x.value for x in ALL_SCOPES}]
    expires_at = None
    if days.strip():
        try:
            expires_at = utcnow() + timedelta(days=float(days))
        except (ValueError, OverflowError):
            errors["expires_at"] = "a number of days"
    if not errors:
        try:
            token, secret = tokens.create_api_token(
                session,
                ctx.settings,
                principal.user,
                name=name,
                scopes=chosen,
                expires_at=expires_at,
                caller_scopes=principal.scopes,
            )
        except InvalidInput as exc:
            errors = _field_errors(exc)
        except Forbidden as exc:
            errors = {"scopes": exc.detail}
        else:
            session.flush()
            return _page(request, session, principal, ctx, 201, created={"token": token, "secret": secret})
    return _page(request, session, principal, ctx, 422, errors=errors, form={"name": name, "days": days})


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(token_id: uuid.UUID, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    tokens.revoke_api_token(session, principal.user, token_id)
    response = redirect("/account")
    web_session.flash(response, ctx.settings, "The token is revoked.")
    return response
