"""Logging in and, when the installation allows it, signing up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from labcloud.api.deps import Ctx, DbSession
from labcloud.api.guard import GuardedRoute
from labcloud.api.openapi import problems
from labcloud.api.schemas import LoginOut, SignUp, UserOut
from labcloud.errors import Forbidden
from labcloud.services import tokens, users

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=GuardedRoute)


@router.post(
    "/login", response_model=LoginOut, responses=problems(401, 429), summary="Log in with email and password"
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: DbSession,
    ctx: Ctx,
) -> LoginOut:
    """OAuth2 password flow: `username` is the email. Returns a short-lived bearer token."""
    address = request.client.host if request.client else "unknown"
    user = users.login(session, ctx.login_throttle, form.username, form.password, address)
    token, lifetime = tokens.login_token(user, ctx.settings)
    return LoginOut(access_token=token, expires_in=lifetime)


@router.post(
    "/register",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 409),
    summary="Sign up",
)
def register(body: SignUp, session: DbSession, ctx: Ctx) -> UserOut:
    """Create an account yourself. Only when the installation has open sign-up; otherwise admins invite."""
    if not ctx.settings.open_signup:
        raise Forbidden("Sign-up is closed on this installation; ask an administrator for an account.")
    user = users.create_user(session, ctx.settings, email=body.email, password=body.password, name=body.name)
    return UserOut.model_validate(user)
