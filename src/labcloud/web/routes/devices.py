"""Devices, for everyone logged in: the list (live), one device's page (status, problems, the jobs it holds,
charts of its last day), its location and description (changed by admins); and the admins' page of the
JSON Schemas a device's status must match, per label."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput
from labcloud.request_scope import Ctx, DbSession
from labcloud.runtime import Runtime
from labcloud.services import device_schemas, devices, workers
from labcloud.services.tokens import Principal
from labcloud.web import charts
from labcloud.web import session as web_session
from labcloud.web.deps import AdminForm, AdminPage, PageRoute, PageUser, redirect
from labcloud.web.rendering import amount, filesize, render, templates

router = APIRouter(route_class=PageRoute, include_in_schema=False)
MAX_VALUE_SHOWN = 200


def status_value(value: Any) -> str:
    """A status field's value as the device sent it: text as it is, anything else as JSON (shortened)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= MAX_VALUE_SHOWN else text[: MAX_VALUE_SHOWN - 1] + "…"


def device_url(worker: Worker) -> str:
    """A device's page: by name, or by id for a name with a slash (from before names could not have one)."""
    return f"/devices/{quote(worker.name, safe='') if '/' not in worker.name else worker.id}"


# what the device pages' templates use (and the admin's workers table, which links to them)
templates.env.filters.update(
    status_value=status_value, flat_status=devices.flat_status, device_url=device_url
)

STATE_TITLES = {
    "busy": "busy",
    "idle": "idle",
    "draining": "draining",
    "down": "down",
    "waiting": "waiting for first connection",
    "revoked": "revoked",
    "up": "up",
}
FIELD_TITLES = {
    "load1": "Load (1 min average)",
    "disk_free_bytes": "Free disk",
    "memory_available_mb": "Free memory",
}


def _format_of(field: str) -> Any:
    if field == "disk_free_bytes":
        return lambda v: filesize(int(v))
    if field == "memory_available_mb":
        return lambda v: filesize(int(v * 2**20))
    return amount


def _list_context(
    session: Session, ctx: Runtime, principal: Principal, state: str, label: str
) -> dict[str, Any]:
    wanted = state if state in devices.STATES else None
    found, more = devices.list_devices(
        session, ctx.settings, principal.user, state=wanted, label=label.strip() or None
    )
    return {
        "devices": found,
        "truncated": more,
        "now": utcnow(),
        "chosen": {"state": wanted or "", "label": label.strip()},
        "query": urlencode({k: v for k, v in (("state", wanted), ("label", label.strip())) if v}),
        "states": STATE_TITLES,
        "down_after_s": ctx.settings.device_down_seconds,
    }


@router.get("/devices")
def device_list(
    request: Request,
    principal: PageUser,
    session: DbSession,
    ctx: Ctx,
    state: Annotated[str, Query(max_length=16)] = "",
    label: Annotated[str, Query(max_length=270)] = "",
) -> Response:
    return render(request, "devices.html", _list_context(session, ctx, principal, state, label))


@router.get("/ui/devices/rows")
def device_rows(
    request: Request,
    principal: PageUser,
    session: DbSession,
    ctx: Ctx,
    state: Annotated[str, Query(max_length=16)] = "",
    label: Annotated[str, Query(max_length=270)] = "",
) -> Response:
    """The table alone, polled by the list (states, heartbeats, jobs and statuses change by themselves)."""
    return render(request, "partials/device_table.html", _list_context(session, ctx, principal, state, label))


def _status_context(session: Session, ctx: Runtime, principal: Principal, worker: Worker) -> dict[str, Any]:
    device = devices.device(session, ctx.settings, principal.user, worker)
    return {
        "device": device,
        "now": utcnow(),
        "states": STATE_TITLES,
        "status_rows": devices.flat_status(device.status) if device.status else [],
    }


def _charts(session: Session, ctx: Runtime, worker: Worker) -> list[charts.LineChart]:
    past = devices.history(session, ctx.settings, worker)
    interval = ctx.settings.device_sample_interval_s
    drawn = []
    for field, values in past.series.items():
        title = FIELD_TITLES.get(field, field)
        chart = charts.line_chart(
            field,
            title,
            past.times,
            values,
            past.since,
            past.until,
            gap_s=3 * interval,
            fmt=_format_of(field),
            min_span_s=20 * interval,  # a young history is drawn over its own time, not a day's
        )
        if chart is not None:
            drawn.append(chart)
    return drawn


def _device_page(
    request: Request,
    session: Session,
    ctx: Runtime,
    principal: Principal,
    worker: Worker,
    status: int = 200,
    **extra: Any,
) -> Response:
    context = {
        **_status_context(session, ctx, principal, worker),
        "charts": _charts(session, ctx, worker),
        "history_hours": ctx.settings.device_history_hours,
        "sample_interval_s": ctx.settings.device_sample_interval_s,
        "errors": {},
        "form": {},
        **extra,
    }
    return render(request, "device.html", context, status)


@router.get("/devices/{name}")
def device_page(request: Request, name: str, principal: PageUser, session: DbSession, ctx: Ctx) -> Response:
    return _device_page(request, session, ctx, principal, devices.find(session, name))


@router.get("/devices/{name}/status")
def device_status(request: Request, name: str, principal: PageUser, session: DbSession, ctx: Ctx) -> Response:
    """State, heartbeat, jobs and status: polled by the device's page."""
    worker = devices.find(session, name)
    return render(request, "partials/device_status.html", _status_context(session, ctx, principal, worker))


@router.post("/devices/{name}")
def edit_device(
    request: Request,
    name: str,
    principal: AdminForm,
    session: DbSession,
    ctx: Ctx,
    new_name: Annotated[str, Form(alias="name", max_length=1000)] = "",
    location: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """An admin renames the device or says again where and what it is."""
    worker = devices.find(session, name)
    try:
        workers.update(session, worker, name=new_name, location=location, description=description)
        session.flush()
    except (InvalidInput, Conflict) as exc:
        session.rollback()
        loc = (exc.errors or [{}])[0].get("loc", [])
        field = next((f for f in ("location", "description") if f in loc), "name")
        worker = devices.find(session, name)
        form = {"name": new_name, "location": location, "description": description}
        return _device_page(
            request, session, ctx, principal, worker, exc.status, errors={field: exc.detail}, form=form
        )
    response = redirect(device_url(worker))
    web_session.flash(response, ctx.settings, f"{worker.name}: saved.")
    return response


# ------------------------------------------------------------------------------------------- schemas


def _schemas_page(request: Request, session: Session, status: int = 200, **extra: Any) -> Response:
    live = session.scalars(
        select(Worker).where(Worker.state != WorkerState.REVOKED).order_by(Worker.name)
    ).all()
    context: dict[str, Any] = {
        "schemas": [
            {
                "label": device_schemas.label_text((row.key, row.value)),
                "row": row,
                "text": json.dumps(row.schema, indent=2, ensure_ascii=False),
                "workers": [
                    w for w in live if (w.labels or {}).get(row.key) == row.value and not devices.is_engine(w)
                ],
            }
            for row in device_schemas.list_schemas(session)
        ],
        "errors": {},
        "form": {},
        **extra,
    }
    return render(request, "admin_device_schemas.html", context, status)


@router.get("/admin/device-schemas")
def schema_list(request: Request, _admin: AdminPage, session: DbSession) -> Response:
    return _schemas_page(request, session)


@router.post("/admin/device-schemas")
def set_schema(
    request: Request,
    admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    label: Annotated[str, Form(max_length=1000)] = "",
    text: Annotated[str, Form(alias="schema", max_length=device_schemas.MAX_SCHEMA_BYTES * 2)] = "",
) -> Response:
    form = {"label": label, "schema": text}
    try:
        parsed_label = device_schemas.parse_label(label, ["body", "label"])
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InvalidInput.field(["body", "schema"], f"not JSON: {exc}") from None
        _, created = device_schemas.put(session, parsed_label, parsed, admin.user.id)
        session.commit()
    except InvalidInput as exc:
        session.rollback()
        loc = (exc.errors or [{}])[0].get("loc", [])
        field = "label" if "label" in loc else "schema"
        return _schemas_page(request, session, exc.status, errors={field: exc.detail}, form=form)
    ctx.device_schemas.invalidate()
    response = redirect("/admin/device-schemas")
    shown = device_schemas.label_text(parsed_label)
    done = "set" if created else "changed"
    web_session.flash(response, ctx.settings, f"The status schema of {shown} is {done}.")
    return response


@router.post("/admin/device-schemas/delete")
def delete_schema(
    _admin: AdminForm,
    session: DbSession,
    ctx: Ctx,
    label: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    parsed = device_schemas.parse_label(label, ["body", "label"])
    device_schemas.delete(session, parsed)
    session.commit()
    ctx.device_schemas.invalidate()
    response = redirect("/admin/device-schemas")
    text = device_schemas.label_text(parsed)
    web_session.flash(response, ctx.settings, f"The status schema of {text} is gone.")
    return response
