"""Logging in and, when the installation allows it, signing up."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from labcloud.api.deps import Ctx, DbSession
from labcloud.api.openapi import problems
from labcloud.api.schemas import LoginOut, SignUp, UserOut
from labcloud.errors import Conflict, Forbidden
from labcloud.http.guard import GuardedRoute
from labcloud.services import sso_accounts, tokens, users
from labcloud.settings import Settings

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=GuardedRoute)
log = logging.getLogger(__name__)


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr


class SetPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=2000, description="From the link of a reset or invitation mail.")
    password: str = Field(max_length=1000)


@router.post(
    "/login",
    response_model=LoginOut,
    responses=problems(401, 403, 429),
    summary="Log in with email and password (403 when passwords are turned off for the account)",
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: DbSession,
    ctx: Ctx,
) -> LoginOut:
    """OAuth2 password flow: `username` is the email. Returns a short-lived bearer token."""
    address = request.client.host if request.client else "unknown"
    sso_accounts.check_password_login(ctx.settings, form.username)
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
    sso_accounts.check_password_login(ctx.settings, str(body.email))
    user = users.create_user(session, ctx.settings, email=body.email, password=body.password, name=body.name)
    return UserOut.model_validate(user)


class ResetOut(BaseModel):
    message: str


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResetOut,
    responses=problems(403, 409),
    summary="Mail a link to set a new password (the same answer whether or not the account exists; 403 "
    "when passwords are turned off)",
)
def password_reset(body: ResetIn, session: DbSession, ctx: Ctx, background: BackgroundTasks) -> ResetOut:
    sso_accounts.check_passwords_on(ctx.settings)
    if not ctx.settings.smtp_url:
        raise Conflict("This installation sends no e-mail; ask an administrator to set your password.")
    user = users.reset_requested(session, ctx.settings, body.email)
    if user is not None:
        background.add_task(_send, users.password_mail(ctx.settings, user, invitation=False), ctx.settings)
    return ResetOut(
        message="If the address has an account here, a link is on its way; it works once, for an hour."
    )


def _send(mail: users.LinkMail, settings: Settings) -> None:
    try:
        mail.send(settings)
    except Exception as exc:  # (the answer went out already; the user may ask again)
        log.warning("password mail to %s not sent: %s", mail.to, exc)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(403, 422),
    summary="Set your password with the token of a reset or invitation link (it works once; 403 when "
    "passwords are turned off)",
)
def set_password(body: SetPasswordIn, session: DbSession, ctx: Ctx) -> Response:
    sso_accounts.check_passwords_on(ctx.settings)
    users.set_password_by_token(session, ctx.settings, body.token, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
