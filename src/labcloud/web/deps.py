"""Who is browsing (from the session cookie), CSRF checks, and the route class that turns errors into pages.

Browser routes answer HTML even when something goes wrong: a login redirect instead of 401, an error
page instead of problem+json. Domain rules are not repeated here; the services raise, the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from labcloud.errors import Forbidden, LabcloudError
from labcloud.http.guard import GuardedRoute, gate
from labcloud.http.problems import RETRY_AFTER_S, database_busy
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import audit, sessions, tokens
from labcloud.services.tokens import Principal
from labcloud.settings import Settings
from labcloud.web import session as web_session
from labcloud.web.rendering import error_page

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:{store}; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(settings: Settings) -> dict[str, str]:
    """No inline script or style, no framing. Image previews may come from the S3 store (downloads are
    redirects to presigned URLs there)."""
    store = ""
    if settings.storage_url.startswith("s3://"):
        endpoint = urlsplit(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        store = f" {endpoint.scheme}://{endpoint.netloc}" if endpoint else " https://*.amazonaws.com"
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY.format(store=store),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }


class LoginRequired(Exception):
    """No valid session: the browser is sent to the login page."""


class PasswordChangeRequired(Exception):
    """The account's password was issued by an administrator: the browser is sent to choose its own."""


# Where a user whose password must change may still go: to change it, or to leave.
WHILE_PASSWORD_CHANGES = ("/account", "/account/password", "/logout")


def _live_session(
    request: Request, ctx: Runtime, session: Any
) -> tuple[web_session.BrowserSession, sessions.Live]:
    browser = web_session.read(request, ctx.settings)
    if browser is None:
        raise LoginRequired
    live = sessions.find(session, browser.secret)
    if live is None:  # logged out, expired, password changed, deactivated
        raise LoginRequired
    browser.session_id = live.row.id
    return browser, live


def _authenticate(request: Request, ctx: Runtime, session: Any) -> Principal:
    browser, live = _live_session(request, ctx, session)
    principal = Principal(
        user=live.user,
        scopes=frozenset(tokens.scopes_for(live.user)),
        token_id=None,
        session_id=live.row.id,
    )
    request.state.browser = browser
    request.state.principal = principal
    audit.acting_user(live.user)
    if sessions.renew_if_due(ctx.settings, live.row):
        request.state.renewed = browser
    return principal


def session_gate(request: Request, ctx: Runtime) -> None:
    """Before a form is read: the cookie must name a live session (else the login page)."""
    with ctx.db.sessions() as session:  # a look only: nothing is written, nothing committed
        _live_session(request, ctx, session)


@gate(session_gate)
def page_principal(request: Request, session: DbSession, ctx: Ctx) -> Principal:
    """The logged-in user of a page request (the request's database session is reused). One whose
    password an administrator issued is sent to choose their own first."""
    principal = _authenticate(request, ctx, session)
    if principal.user.must_change_password and request.url.path not in WHILE_PASSWORD_CHANGES:
        raise PasswordChangeRequired
    return principal


@gate(session_gate)
def detached_principal(request: Request, ctx: Ctx) -> Principal:
    """Like :func:`page_principal` for long responses (log streams, downloads): no session is held."""
    with ctx.db.session() as session:
        return _authenticate(request, ctx, session)


async def _check_csrf(request: Request) -> None:
    given = request.headers.get(web_session.CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(web_session.CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not web_session.csrf_matches(request.state.browser.csrf, given):
        raise Forbidden(
            "This form has expired or did not come from this site. Reload the page and try again."
        )


async def form_principal(
    request: Request, principal: Annotated[Principal, Depends(page_principal)]
) -> Principal:
    """The user of a state-changing request, after checking its CSRF token."""
    await _check_csrf(request)
    return principal


async def admin_page(principal: Annotated[Principal, Depends(page_principal)]) -> Principal:
    if not principal.user.is_admin:
        raise Forbidden("This page is for administrators.")
    return principal


async def admin_form(principal: Annotated[Principal, Depends(form_principal)]) -> Principal:
    if not principal.user.is_admin:
        raise Forbidden("This page is for administrators.")
    return principal


PageUser = Annotated[Principal, Depends(page_principal)]
FormUser = Annotated[Principal, Depends(form_principal)]
StreamUser = Annotated[Principal, Depends(detached_principal)]
AdminPage = Annotated[Principal, Depends(admin_page)]
AdminForm = Annotated[Principal, Depends(admin_form)]


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL or a scheme-relative one (open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_redirect(request: Request) -> Response:
    """To the login page, coming back afterwards to the page the browser shows: for an htmx request that
    is the page it was made from (``HX-Current-URL``), never the fragment it asked for; for a form sent
    (POST) the page it was sent from (``Referer``), never the address it was sent to, which is no page (its
    action is not done: it can be sent again from there)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    partial = bool(request.headers.get("hx-request"))
    if partial or request.method not in ("GET", "HEAD"):
        shown = urlsplit(request.headers.get("hx-current-url" if partial else "referer", ""))
        target = safe_next(shown.path + (f"?{shown.query}" if shown.query else ""))
    location = "/login" if target == "/" else f"/login?next={quote(target, safe='')}"
    if partial:
        return Response(status_code=200, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def redirect(url: str) -> RedirectResponse:
    """After a form: see the result with a GET (post/redirect/get)."""
    return RedirectResponse(url, status_code=303)


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


class PageRoute(GuardedRoute):
    """Answers errors as HTML pages, renews the session cookie, and adds security headers; like every
    guarded route it checks the session before it reads a form, and no page takes a body larger than
    ``max_json_body_bytes`` (files go through the upload API)."""

    bound_every_body = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            ctx: Runtime = request.app.state.ctx
            request.state.settings = ctx.settings
            try:
                response = await handler(request)
            except LoginRequired:
                response = login_redirect(request)
                if web_session.SESSION_COOKIE in request.cookies:  # an ended session: forget its cookie
                    web_session.clear(response)
            except PasswordChangeRequired:
                response = (
                    Response(status_code=200, headers={"HX-Redirect": "/account#password"})
                    if request.headers.get("hx-request")
                    else RedirectResponse("/account#password", status_code=303)
                )
            except LabcloudError as exc:
                response = error_page(request, exc.status, exc.title, exc.detail)
                if "Retry-After" in exc.headers:  # (busy, throttled, maintenance)
                    response.headers["Retry-After"] = exc.headers["Retry-After"]
            except RequestValidationError:
                response = error_page(request, 404, "Not found", "This address does not name anything here.")
            except StarletteHTTPException as exc:
                response = error_page(request, exc.status_code, "Error", str(exc.detail))
            except Exception as exc:
                if database_busy(exc):  # nothing was changed: say so, and when to try again
                    response = error_page(
                        request, 503, "Busy", "The server is busy and nothing was changed; try again shortly."
                    )
                    response.headers["Retry-After"] = str(RETRY_AFTER_S)
                else:
                    log.exception("error in page %s", request.url.path)
                    response = error_page(
                        request,
                        500,
                        "Something went wrong",
                        "An internal error occurred; it has been logged.",
                    )
            renewed = getattr(request.state, "renewed", None)
            if renewed is not None:
                web_session.store(response, request, ctx.settings, renewed)
            if getattr(request.state, "flash_taken", False):
                response.delete_cookie(web_session.FLASH_COOKIE, path="/")
            for name, value in security_headers(ctx.settings).items():
                response.headers.setdefault(name, value)
            return response

        return page_handler
