"""Logging in through an OpenID Connect provider in the browser (and for ``labcloud login --sso`` when the
provider has no device login: the loopback flow ends here too)."""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from labcloud.errors import NotFound
from labcloud.request_scope import Ctx, DbSession
from labcloud.services import audit, sso, sso_accounts, sso_handles
from labcloud.services.sso import LoginRefused
from labcloud.settings import Settings, SsoProvider
from labcloud.web import session as web_session
from labcloud.web.deps import PageRoute, safe_next
from labcloud.web.rendering import render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
log = logging.getLogger(__name__)

PENDING_COOKIE = "labcloud_sso"
LOGOUT_COOKIE = "labcloud_sso_logout"
LOGOUT_AUDIENCE = "labcloud-sso-logout"
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def _provider(ctx: Ctx, name: str) -> SsoProvider:
    provider = ctx.settings.sso_provider(name)
    if provider is None:
        raise NotFound(f"There is no single sign-on provider {name!r} here.")
    return provider


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _callback_url(settings: Settings, provider: SsoProvider) -> str:
    return f"{settings.public_url.rstrip('/')}/login/sso/{provider.name}/callback"


def _refused(
    request: Request, ctx: Ctx, session: Session, provider: SsoProvider, exc: LoginRefused
) -> Response:
    """The login page with the refusal. It commits (the tokens used stay used) with its audit event."""
    audit.record(session, "login.failed", details={"sso": provider.name, "reason": exc.reason})
    log.info("single sign-on at %s refused: %s", provider.name, exc.reason)
    csrf = web_session.login_csrf(request)
    response = render(
        request,
        "login.html",
        {**login_context(ctx.settings), "login_csrf": csrf, "error": exc.message, "next": "/", "email": ""},
        exc.status if exc.status in (401, 403) else 502,
    )
    web_session.store_login_csrf(response, request, ctx.settings, csrf)
    response.delete_cookie(PENDING_COOKIE, path="/login/sso")
    return response


def login_context(settings: Settings) -> dict[str, object]:
    """What the login page shows of single sign-on: a button a provider, and whether passwords work."""
    return {
        "sso_providers": [(p.name, p.button_label) for p in settings.sso_providers],
        "password_login": settings.password_login,
    }


@router.get("/login/sso/{name}")
def start(request: Request, name: str, ctx: Ctx, session: DbSession) -> Response:
    """Off to the provider, with a state, a nonce and a PKCE challenge that its answer must match.
    ``?cli=PORT&challenge=C``: a command line waits on 127.0.0.1:PORT for a one-time code."""
    provider = _provider(ctx, name)
    cli_port = request.query_params.get("cli", "")
    challenge = request.query_params.get("challenge", "")
    if cli_port and not (
        cli_port.isdigit() and 1024 <= int(cli_port) <= 65535 and _CHALLENGE.fullmatch(challenge)
    ):
        raise NotFound("This command-line login link is not valid.")
    ctx.login_throttle.begin_sso(_address(request))  # (given back when the login succeeds)
    try:
        url, pending = sso.start(provider, _callback_url(ctx.settings, provider))
    except LoginRefused as exc:
        return _refused(request, ctx, session, provider, exc)
    claims = {
        "p": pending.provider,
        "s": pending.state,
        "n": pending.nonce,
        "v": pending.verifier,
        "next": safe_next(request.query_params.get("next")),
        "cli": int(cli_port) if cli_port else None,
        "ch": challenge if cli_port else None,
    }
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        PENDING_COOKIE,
        sso_handles.seal(claims, ctx.settings, sso_handles.PENDING_AUDIENCE, sso_handles.PENDING_SECONDS),
        max_age=sso_handles.PENDING_SECONDS,
        httponly=True,
        samesite="lax",
        secure=web_session.secure_cookies(request, ctx.settings),
        path="/login/sso",
    )
    return response


@router.get("/login/sso/{name}/callback")
def callback(request: Request, name: str, ctx: Ctx, session: DbSession) -> Response:
    """The provider's answer: checked, then the account it names is logged in (or the refusal shown)."""
    provider = _provider(ctx, name)
    address = _address(request)
    ctx.login_throttle.begin_sso(address)
    params = request.query_params
    pending = sso_handles.unseal(
        request.cookies.get(PENDING_COOKIE, ""), ctx.settings, sso_handles.PENDING_AUDIENCE
    )
    try:
        if pending is None:
            raise LoginRefused("state_missing", "This login has expired or did not start here; try again.")
        if "error" in params:
            refusal = params["error"][:100]
            raise LoginRefused("provider_error", f"The provider refused the login ({refusal}).")
        verified = sso.finish(
            session,
            provider,
            sso.Pending(str(pending["p"]), str(pending["s"]), str(pending["n"]), str(pending["v"])),
            _callback_url(ctx.settings, provider),
            params.get("code", "")[:4000],
            params.get("state", "")[:400],
        )
        user = sso_accounts.account_for(session, ctx.settings, provider, verified.claims)
    except LoginRefused as exc:
        return _refused(request, ctx, session, provider, exc)
    audit.record(
        session, "login.succeeded", "user", user.id, {"sso": provider.name}, actor=audit.Actor.of_user(user)
    )
    session.commit()  # (before the throttle, which writes apart from this transaction)
    ctx.login_throttle.sso_succeeded(address, 2)  # this answer, and the start
    if pending.get("cli"):
        code = sso_handles.issue_cli_code(ctx.settings, user, str(pending["ch"]))
        response: Response = RedirectResponse(f"http://127.0.0.1:{int(pending['cli'])}/?code={code}", 303)
    else:
        response = RedirectResponse(safe_next(str(pending.get("next") or "/")), status_code=303)
        web_session.store(response, request, ctx.settings, web_session.start(session, user, ctx.settings))
        hint = sso_handles.seal(
            {"p": provider.name, "t": verified.id_token}, ctx.settings, LOGOUT_AUDIENCE, 30 * 86400
        )
        response.set_cookie(
            LOGOUT_COOKIE,
            hint,
            httponly=True,
            samesite="lax",
            secure=web_session.secure_cookies(request, ctx.settings),
            path="/",
        )
    response.delete_cookie(PENDING_COOKIE, path="/login/sso")
    return response


def provider_logout(request: Request, settings: Settings) -> Response | None:
    """After logging out here: a page that sends the browser on to log out at the provider too, when the
    session came from one that offers it (RP-initiated logout); None otherwise."""
    hint = sso_handles.unseal(request.cookies.get(LOGOUT_COOKIE, ""), settings, LOGOUT_AUDIENCE)
    provider = settings.sso_provider(str(hint["p"])) if hint else None
    if hint is None or provider is None:
        return None
    url = sso.end_session_url(provider, str(hint["t"]), f"{settings.public_url.rstrip('/')}/login")
    if url is None:
        return None
    response = render(request, "sso_logout.html", {"url": url, "label": provider.button_label})
    response.delete_cookie(LOGOUT_COOKIE, path="/")
    return response
