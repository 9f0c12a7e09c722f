"""Single sign-on for the command line and scripts: the providers, the device login (RFC 8628) through this
server, and the one-time code of a loopback login. Each ends in an ordinary login token."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from labcloud.api.deps import Ctx, DbSession
from labcloud.api.openapi import problems
from labcloud.api.schemas import LoginOut
from labcloud.db.models import User
from labcloud.errors import Conflict, Forbidden, LabcloudError, NotFound, Unauthorized
from labcloud.http.guard import GuardedRoute
from labcloud.runtime import Runtime
from labcloud.services import audit, sso, sso_accounts, sso_handles, tokens
from labcloud.services.sso import LoginRefused
from labcloud.settings import SsoProvider

router = APIRouter(prefix="/api/v1/auth/sso", tags=["auth"], route_class=GuardedRoute)
log = logging.getLogger(__name__)


class ProviderOut(BaseModel):
    name: str
    label: str


class DeviceOut(BaseModel):
    handle: str = Field(description="Send it to /device/token until the login is done (it expires).")
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    expires_in: int
    interval: int


class DevicePending(BaseModel):
    status: Literal["pending"] = "pending"


class DeviceTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(max_length=8000)


class CliCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=4000)
    verifier: str = Field(min_length=43, max_length=128)


class Gone(LabcloudError):
    status, title, type_slug = 410, "Gone", "gone"


class BadGateway(LabcloudError):
    status, title, type_slug = 502, "Bad gateway", "bad-gateway"


_ERRORS: dict[int, type[LabcloudError]] = {
    401: Unauthorized,
    403: Forbidden,
    409: Conflict,
    410: Gone,
    502: BadGateway,
}


def _refusal(session: Session, provider: str, exc: LoginRefused) -> LabcloudError:
    """The error to answer; the refusal is committed first with its audit event (the tokens used stay
    used)."""
    audit.record(session, "login.failed", details={"sso": provider, "reason": exc.reason})
    session.commit()
    log.info("single sign-on at %s refused: %s", provider, exc.reason)
    return _ERRORS.get(exc.status, Unauthorized)(exc.message)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _give_back(session: Session, ctx: Runtime, address: str, requests: int) -> None:
    """A login done: its requests are not held against the address (committed first: the throttle writes
    apart from this request's transaction)."""
    session.commit()
    ctx.login_throttle.sso_succeeded(address, requests)


def _provider(ctx: Runtime, name: str) -> SsoProvider:
    provider = ctx.settings.sso_provider(name)
    if provider is None:
        raise NotFound(f"There is no single sign-on provider {name!r} here.")
    return provider


def _logged_in(session: Session, ctx: Runtime, user: User, provider: str) -> LoginOut:
    audit.record(
        session, "login.succeeded", "user", user.id, {"sso": provider}, actor=audit.Actor.of_user(user)
    )
    token, lifetime = tokens.login_token(user, ctx.settings)
    return LoginOut(access_token=token, expires_in=lifetime)


@router.get("/providers", response_model=list[ProviderOut], summary="The single sign-on providers")
def providers(ctx: Ctx) -> list[ProviderOut]:
    return [ProviderOut(name=p.name, label=p.button_label) for p in ctx.settings.sso_providers]


@router.post(
    "/{name}/device",
    response_model=DeviceOut,
    responses=problems(404, 409, 429, 502),
    summary="Start a device login at the provider (409 when it offers none: use the loopback login)",
)
def device_start(request: Request, name: str, ctx: Ctx, session: DbSession) -> DeviceOut:
    provider = _provider(ctx, name)
    ctx.login_throttle.begin_sso(_address(request))  # (given back when the login succeeds)
    try:
        answer = sso.device_start(provider)
    except LoginRefused as exc:
        raise _refusal(session, name, exc) from None
    expires = min(int(answer.get("expires_in") or 600), 1800)
    interval = max(1, int(answer.get("interval") or 5))
    handle = sso_handles.seal(
        {"p": provider.name, "dc": str(answer["device_code"]), "i": interval},
        ctx.settings,
        sso_handles.DEVICE_AUDIENCE,
        expires,
    )
    return DeviceOut(
        handle=handle,
        user_code=str(answer["user_code"]),
        verification_uri=str(answer.get("verification_uri") or answer.get("verification_url") or ""),
        verification_uri_complete=answer.get("verification_uri_complete"),
        expires_in=expires,
        interval=interval,
    )


@router.post(
    "/device/token",
    response_model=LoginOut,
    responses={
        202: {"model": DevicePending, "description": "Not approved yet: ask again after the interval."},
        **problems(401, 403, 410, 429),
    },
    summary="The login token once the device login is approved (202 until then; 429 when polled faster "
    "than its interval)",
)
def device_token(request: Request, body: DeviceTokenIn, session: DbSession, ctx: Ctx) -> Any:
    address = _address(request)
    ctx.login_throttle.begin_sso(address)
    pending = sso_handles.unseal(body.handle, ctx.settings, sso_handles.DEVICE_AUDIENCE)
    if pending is None:
        raise Gone("This device login has expired or did not start here; start again.")
    provider = _provider(ctx, str(pending["p"]))
    ctx.login_throttle.pace(f"sso-poll\0{body.handle}", float(pending.get("i") or 5))
    try:
        verified = sso.device_poll(session, provider, str(pending["dc"]))
        if verified is None:
            _give_back(session, ctx, address, 1)  # (waiting is no failure)
            return JSONResponse({"status": "pending"}, status_code=202)
        user = sso_accounts.account_for(session, ctx.settings, provider, verified.claims)
    except LoginRefused as exc:
        raise _refusal(session, provider.name, exc) from None
    done = _logged_in(session, ctx, user, provider.name)
    _give_back(session, ctx, address, 2)  # this poll, and the start
    return done


@router.post(
    "/cli-token",
    response_model=LoginOut,
    responses=problems(401, 429),
    summary="Trade the one-time code of a loopback login (and its PKCE verifier) for a login token",
)
def cli_token(request: Request, body: CliCodeIn, session: DbSession, ctx: Ctx) -> LoginOut:
    address = _address(request)
    ctx.login_throttle.begin_sso(address)
    try:
        user = sso_handles.redeem_cli_code(session, ctx.settings, body.code, body.verifier)
    except LoginRefused as exc:
        raise _refusal(session, "loopback", exc) from None
    done = _logged_in(session, ctx, user, "loopback")
    _give_back(session, ctx, address, 1)
    return done
