"""Webhooks: subscribe a URL to events (your jobs', or a project's as its manager), see every delivery and
its tries, send a test, redeliver, pause and resume. The rules are :mod:`labcloud.services.webhooks`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import AppSettings, DbSession, Reader, Writer
from labcloud.api.openapi import problems
from labcloud.db.models import WebhookSubscription
from labcloud.http.guard import GuardedRoute
from labcloud.services import projects, webhooks

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], route_class=GuardedRoute)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Where to POST each event (http or https).")
    events: list[str] = Field(max_length=20, description=f"One or more of {', '.join(webhooks.EVENTS)}.")
    project: str | None = Field(
        None, max_length=40, description="A project's slug: its events (you must manage it); default yours."
    )


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[str] | None = Field(
        None, max_length=20, description=f"One or more of {', '.join(webhooks.EVENTS)}."
    )
    active: bool | None = Field(
        None, description="false pauses it; true resumes it (and clears its failures)."
    )


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    project: str | None = Field(description="The project whose events it hears; null: your jobs.")
    state: str = Field(description="active or paused")
    paused_reason: str
    failures_in_a_row: int = Field(
        description="Events given up on in a row (it pauses at webhook_pause_after)."
    )
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="whsec_...: verifies each delivery's webhook-signature (Standard Webhooks). Shown once."
    )


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_id: uuid.UUID = Field(description="The webhook-id header: the same on every try of it.")
    state: str = Field(description="pending, delivered or failed (given up)")
    attempts: int
    next_try_at: datetime | None
    last_status: int | None = Field(description="The receiver's HTTP status of the last try (null: none).")
    last_error: str
    tries: list[dict[str, Any]] = Field(description="Each try: at, status, error.")
    created_at: datetime
    delivered_at: datetime | None


def _out(session: DbSession, found: WebhookSubscription) -> dict[str, Any]:
    slug = projects.slugs(session, [found.project_id]).get(found.project_id) if found.project_id else None
    return {
        "id": found.id,
        "url": found.url,
        "events": found.events,
        "project": slug,
        "state": found.state,
        "paused_reason": found.paused_reason,
        "failures_in_a_row": found.failures_in_a_row,
        "created_at": found.created_at,
    }


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problems(422),
    summary="Subscribe a URL to events (its secret is shown once)",
)
def create_webhook(
    body: WebhookIn, principal: Writer, session: DbSession, settings: AppSettings
) -> dict[str, Any]:
    found = webhooks.subscribe(session, settings, principal.user, body.url, body.events, body.project)
    return {**_out(session, found), "secret": found.secret}


@router.get("", response_model=list[WebhookOut], summary="Your webhooks")
def list_webhooks(principal: Reader, session: DbSession) -> list[dict[str, Any]]:
    return [_out(session, w) for w in webhooks.mine(session, principal.user)]


@router.get("/{webhook_id}", response_model=WebhookOut, responses=problems(404), summary="One webhook")
def get_webhook(webhook_id: uuid.UUID, principal: Reader, session: DbSession) -> dict[str, Any]:
    return _out(session, webhooks.get(session, principal.user, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookOut,
    responses=problems(404, 422),
    summary="Change its events, pause or resume it",
)
def change_webhook(
    webhook_id: uuid.UUID, body: WebhookPatch, principal: Writer, session: DbSession
) -> dict[str, Any]:
    found = webhooks.get(session, principal.user, webhook_id)
    return _out(session, webhooks.change(session, found, body.events, body.active))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    summary="Unsubscribe",
)
def delete_webhook(webhook_id: uuid.UUID, principal: Writer, session: DbSession) -> Response:
    session.delete(webhooks.get(session, principal.user, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class TestSent(BaseModel):
    event_id: uuid.UUID = Field(description="Its webhook-id; its delivery shows in the deliveries.")


@router.post(
    "/{webhook_id}/test",
    response_model=TestSent,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(404),
    summary="Send a webhook.test event to it (within a second or so; see its deliveries)",
)
def test_webhook(webhook_id: uuid.UUID, principal: Writer, session: DbSession) -> TestSent:
    event = webhooks.send_test(session, webhooks.get(session, principal.user, webhook_id))
    return TestSent(event_id=event.id)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    responses=problems(404),
    summary="Its deliveries, newest first, with every try's answer",
)
def list_deliveries(webhook_id: uuid.UUID, principal: Reader, session: DbSession) -> list[DeliveryOut]:
    found = webhooks.get(session, principal.user, webhook_id)
    return [DeliveryOut.model_validate(d) for d in webhooks.deliveries(session, found)]


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    responses=problems(404),
    summary="Send a delivery again now",
)
def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, principal: Writer, session: DbSession
) -> DeliveryOut:
    found = webhooks.get(session, principal.user, webhook_id)
    return DeliveryOut.model_validate(webhooks.redeliver(session, found, delivery_id))
