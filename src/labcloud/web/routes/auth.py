"""Logging in and out of the browser session."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request, Response

from labcloud.errors import Forbidden, InvalidInput, TooManyRequests, Unauthorized
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import sessions, sso_accounts, users
from labcloud.settings import Settings
from labcloud.web import session as web_session
from labcloud.web.deps import FormUser, PageRoute, redirect, safe_next
from labcloud.web.rendering import render
from labcloud.web.routes import sso as sso_web

router = APIRouter(route_class=PageRoute, include_in_schema=False)
log = logging.getLogger(__name__)


def _login_page(
    request: Request,
    ctx: Ctx,
    next_url: str,
    email: str = "",
    error: str = "",
    status: int = 200,
    notice: str = "",
) -> Response:
    csrf = web_session.login_csrf(request)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": csrf,
            "email": email,
            "error": error,
            "notice": notice,
            "next": safe_next(next_url),
            **sso_web.login_context(ctx.settings),
        },
        status,
    )
    web_session.store_login_csrf(response, request, ctx.settings, csrf)
    return response


@router.get("/login")
def login_form(request: Request, ctx: Ctx, session: DbSession) -> Response:
    browser = web_session.read(request, ctx.settings)
    if browser is not None and sessions.find(session, browser.secret) is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return _login_page(request, ctx, request.query_params.get("next", "/"))


@router.post("/login")
def login(
    request: Request,
    ctx: Ctx,
    session: DbSession,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """The same checks and throttle as ``POST /api/v1/auth/login``; the answer is a session cookie."""
    expected = request.cookies.get(web_session.LOGIN_CSRF_COOKIE, "")
    if not expected or not web_session.csrf_matches(expected, csrf_token):
        raise Forbidden("The login form has expired or did not come from this site. Reload it and try again.")
    address = request.client.host if request.client else "unknown"
    try:
        sso_accounts.check_password_login(ctx.settings, email)
        user = users.login(session, ctx.login_throttle, email, password, address)
    except (TooManyRequests, Unauthorized, Forbidden) as exc:
        response = _login_page(request, ctx, next, email, exc.detail, exc.status)
        if "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    response = redirect(safe_next(next))
    web_session.store(response, request, ctx.settings, web_session.start(session, user, ctx.settings))
    response.delete_cookie(web_session.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, principal: FormUser, session: DbSession, ctx: Ctx) -> Response:
    """Ends the session on the server (its cookie, wherever copied, is worth nothing after this) and the
    tokens the page was given for its own API calls."""
    if principal.session_id is not None:
        sessions.end(session, principal.session_id)
    request.state.renewed = None  # not renewed on the way out
    response = sso_web.provider_logout(request, ctx.settings) or redirect("/login")
    web_session.clear(response)
    return response


# --- a forgotten password, and a link to set one ----------------------------------------------------------


def _anonymous_form(
    request: Request, ctx: Ctx, template: str, values: dict[str, object], status: int = 200
) -> Response:
    csrf = web_session.login_csrf(request)
    response = render(request, template, {"login_csrf": csrf, **values}, status)
    web_session.store_login_csrf(response, request, ctx.settings, csrf)
    return response


def _check_csrf(request: Request, csrf_token: str) -> None:
    expected = request.cookies.get(web_session.LOGIN_CSRF_COOKIE, "")
    if not expected or not web_session.csrf_matches(expected, csrf_token):
        raise Forbidden("The form has expired or did not come from this site. Reload it and try again.")


@router.get("/login/forgot")
def forgot_form(request: Request, ctx: Ctx) -> Response:
    sso_accounts.check_passwords_on(ctx.settings)
    return _anonymous_form(request, ctx, "password_forgot.html", {"mail": bool(ctx.settings.smtp_url)})


@router.post("/login/forgot")
def forgot(
    request: Request,
    ctx: Ctx,
    session: DbSession,
    background: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The same answer whether or not the account exists (nobody learns who has one)."""
    sso_accounts.check_passwords_on(ctx.settings)
    _check_csrf(request, csrf_token)
    user = users.reset_requested(session, ctx.settings, email) if ctx.settings.smtp_url else None
    if user is not None:
        background.add_task(_send, users.password_mail(ctx.settings, user, invitation=False), ctx.settings)
    return _anonymous_form(
        request,
        ctx,
        "password_forgot.html",
        {"mail": bool(ctx.settings.smtp_url), "sent": True, "email": email},
    )


def _send(mail: users.LinkMail, settings: Settings) -> None:
    try:
        mail.send(settings)
    except Exception as exc:
        log.warning("password mail to %s not sent: %s", mail.to, exc)


@router.get("/login/set-password")
def set_password_form(request: Request, ctx: Ctx) -> Response:
    sso_accounts.check_passwords_on(ctx.settings)
    return _anonymous_form(
        request, ctx, "password_set.html", {"token": request.query_params.get("token", "")[:2000]}
    )


@router.post("/login/set-password")
def set_password(
    request: Request,
    ctx: Ctx,
    session: DbSession,
    token: Annotated[str, Form(max_length=2000)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    sso_accounts.check_passwords_on(ctx.settings)
    _check_csrf(request, csrf_token)
    try:
        users.set_password_by_token(session, ctx.settings, token, password)
    except InvalidInput as exc:
        error = exc.errors[0]["msg"] if exc.errors else exc.detail
        return _anonymous_form(request, ctx, "password_set.html", {"token": token, "error": error}, 422)
    return _login_page(request, ctx, "/", notice="Your password is set: log in with it.")
