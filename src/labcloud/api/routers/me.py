"""The caller's own account, personal API tokens, and the ends of their jobs (for open pages)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from labcloud.api.deps import AppSettings, DbSession, PageCursor, PageLimit, Reader, Writer
from labcloud.api.schemas import (
    ChatChannelOut,
    MeUpdate,
    PageOut,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserOut,
)
from labcloud.http.guard import GuardedRoute
from labcloud.services import chat, job_ends, tokens, users
from labcloud.services.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/v1/me", tags=["me"], route_class=GuardedRoute)


@router.get("", response_model=UserOut, summary="Your account")
def read_me(principal: Reader) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.patch("", response_model=UserOut, summary="Update your account")
def update_me(body: MeUpdate, principal: Writer, settings: AppSettings) -> UserOut:
    if body.notify_apprise_url is not None:
        principal.user.notify_apprise_url = chat.check(settings, body.notify_apprise_url)
    return UserOut.model_validate(
        users.update_profile(principal.user, name=body.name, notify_email=body.notify_email)
    )


@router.get("/chat", response_model=ChatChannelOut, summary="Your chat channel (only its scheme)")
def read_chat(principal: Reader) -> ChatChannelOut:
    """Set it with PATCH /api/v1/me {"notify_apprise_url"}; the URL itself is never shown back."""
    return ChatChannelOut(scheme=principal.user.notify_apprise)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change your password")
def change_password(
    body: PasswordChange, principal: Writer, session: DbSession, settings: AppSettings
) -> Response:
    """Login tokens issued before the change stop working; personal API tokens stay valid."""
    users.change_password(
        session,
        settings,
        principal.user,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens", response_model=PageOut[TokenOut], summary="Your API tokens")
def list_tokens(
    principal: Reader,
    session: DbSession,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> PageOut[TokenOut]:
    page = tokens.list_api_tokens(session, principal.user, limit=limit, cursor=cursor)
    return PageOut[TokenOut].of(page, TokenOut.model_validate)


@router.post(
    "/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, summary="Create an API token"
)
def create_token(
    body: TokenCreate, principal: Writer, session: DbSession, settings: AppSettings
) -> TokenCreated:
    """The secret is in the answer and nowhere else: only its hash is stored. Its scopes must be among
    those of the credential you call with."""
    token, secret = tokens.create_api_token(
        session,
        settings,
        principal.user,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        caller_scopes=principal.scopes,
    )
    return TokenCreated.model_validate({**TokenOut.model_validate(token).model_dump(), "token": secret})


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API token")
def revoke_token(token_id: uuid.UUID, principal: Writer, session: DbSession) -> Response:
    tokens.revoke_api_token(session, principal.user, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class JobEndOut(BaseModel):
    id: uuid.UUID = Field(description="Time-ordered: pass the last one seen as ?after=.")
    type: str = Field(description="job.succeeded, job.failed or job.cancelled")
    created_at: datetime
    job: dict[str, Any] = Field(description="The job as it ended (id, name, app, state, reason, ...).")


class JobEndsOut(BaseModel):
    items: list[JobEndOut]
    last_id: uuid.UUID | None = Field(
        description="Where the next call starts (?after=): the last item's id, else where this one started."
    )


@router.get("/events", response_model=JobEndsOut, summary="Your jobs that ended since an event")
def list_job_ends(
    principal: Reader,
    session: DbSession,
    after: Annotated[uuid.UUID | None, Query(description="The last event id you have seen.")] = None,
) -> JobEndsOut:
    """Your own jobs' end events newer than ``after``, oldest first, at most 50 a call: what an open page
    polls to tell you a job ended. Without ``after`` there are none, only ``last_id`` (your newest event)
    to start from: a page that opens does not replay old ends."""
    if after is None:
        return JobEndsOut(items=[], last_id=job_ends.last_id(session, principal.user))
    found = job_ends.since(session, principal.user, after)
    items = [
        JobEndOut(id=e.id, type=e.kind, created_at=e.created_at, job=dict(e.payload.get("job") or {}))
        for e in found
    ]
    return JobEndsOut(items=items, last_id=found[-1].id if found else after)
