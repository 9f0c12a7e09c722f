"""Devices, for everyone logged in (scientists choose devices for sessions): every worker that is not revoked
with where and what it is, its state, current jobs and status, and one device's history; and, for admins,
the JSON Schemas a device's status must match, per label."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from labcloud.api.deps import Admin, Ctx, DbSession, Reader
from labcloud.api.openapi import problems
from labcloud.api.worker_schemas import StatusProblem
from labcloud.db.models import DeviceSchema
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput
from labcloud.http.guard import GuardedRoute
from labcloud.services import device_schemas, devices

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], route_class=GuardedRoute)
schemas_router = APIRouter(prefix="/api/v1/device-schemas", tags=["devices"], route_class=GuardedRoute)

STATE_HELP = (
    "busy (holding jobs), idle (heartbeating, no jobs), draining, down (no heartbeat for "
    "device_down_after_s), waiting (never heard from), or up (an executor's engine)"
)


class DeviceJob(BaseModel):
    id: uuid.UUID
    name: str
    app: str
    state: str
    progress: float | None


class DeviceOut(BaseModel):
    id: uuid.UUID
    name: str
    location: str
    description: str
    labels: dict[str, str]
    state: str = Field(description=STATE_HELP)
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None = Field(description="seconds since its last heartbeat")
    status: dict[str, Any] | None = Field(
        description="what it last said of itself (its heartbeat's telemetry.status), as it came"
    )
    status_problems: list[StatusProblem] = Field(
        description="what is wrong with that status (against the schemas of its labels); empty: valid"
    )
    machine: dict[str, Any] = Field(
        description="its computer: load1/5/15, cpu_count, disk_free_bytes, disk_total_bytes, "
        "memory_available_mb (what it reported)"
    )
    jobs: list[DeviceJob] = Field(description="the jobs it holds now that you may see")
    other_jobs: int = Field(description="how many more it holds, of others' that you may not see")
    version: str


class DeviceList(BaseModel):
    items: list[DeviceOut]
    truncated: bool = Field(False, description="more devices exist than one listing holds (1000)")


class HistoryOut(BaseModel):
    since: datetime
    until: datetime
    interval_s: int = Field(description="at most one sample per this many seconds")
    times: list[datetime] = Field(description="when each sample was taken, oldest first")
    series: dict[str, list[float | None]] = Field(
        description="per field (load1, disk_free_bytes, memory_available_mb, status.<field>...), its value "
        "at each time (null where that sample lacks it)"
    )


class DeviceDetail(DeviceOut):
    history: HistoryOut


def _out(device: devices.Device, now: datetime) -> dict[str, Any]:
    w = device.worker
    return {
        "id": w.id,
        "name": w.name,
        "location": w.location,
        "description": w.description,
        "labels": w.labels or {},
        "state": device.state,
        "last_heartbeat_at": w.last_heartbeat_at,
        "heartbeat_age_s": (now - w.last_heartbeat_at).total_seconds() if w.last_heartbeat_at else None,
        "status": device.status,
        "status_problems": w.status_problems or [],
        "machine": device.machine,
        "jobs": [
            {"id": j.id, "name": j.name, "app": j.app, "state": j.state, "progress": j.progress}
            for j in device.visible_jobs
        ],
        "other_jobs": device.hidden_jobs,
        "version": w.version,
    }


@router.get("", response_model=DeviceList, operation_id="list_devices", summary="Every device, live")
def list_all(
    principal: Reader,
    session: DbSession,
    ctx: Ctx,
    state: Annotated[
        str | None,
        Query(max_length=16, description="only these: a state, or up for every heartbeating one"),
    ] = None,
    label: Annotated[
        str | None, Query(max_length=270, description="only those with this label, key=value")
    ] = None,
) -> DeviceList:
    """Every worker that is not revoked, by name: where and what it is, its state, the jobs it holds and
    its status (no tokens). Poll it for a live view."""
    if state is not None and state not in devices.STATES:
        raise InvalidInput.field(["query", "state"], f"one of: {', '.join(devices.STATES)}")
    found, more = devices.list_devices(session, ctx.settings, principal.user, state=state, label=label)
    now = utcnow()
    return DeviceList(items=[DeviceOut(**_out(d, now)) for d in found], truncated=more)


@router.get(
    "/{name}",
    response_model=DeviceDetail,
    operation_id="get_device",
    summary="One device, with its history",
)
def get_one(
    name: str,
    principal: Reader,
    session: DbSession,
    ctx: Ctx,
    hours: Annotated[
        float | None, Query(gt=0, le=24 * 366, description="history over this many hours (default: all kept)")
    ] = None,
) -> DeviceDetail:
    """A device by name (or id), and its samples over the last day (``device_history_hours``): load, free
    disk and memory, and each numeric field of its status."""
    device = devices.device(session, ctx.settings, principal.user, devices.find(session, name))
    past = devices.history(session, ctx.settings, device.worker, hours)
    history = HistoryOut(
        since=past.since,
        until=past.until,
        interval_s=ctx.settings.device_sample_interval_s,
        times=past.times,
        series=past.series,
    )
    return DeviceDetail(**_out(device, utcnow()), history=history)


# ------------------------------------------------------------------------------------------- schemas


class SchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: dict[str, Any] = Field(
        alias="schema",
        description='a JSON Schema (2020-12 unless its $schema says otherwise), e.g. {"type": "object", '
        '"required": ["camera"], "properties": {"camera": {"enum": ["ready", "recording"]}}}',
    )


class SchemaOut(BaseModel):
    label: str = Field(description="key=value: it applies to every worker with this label")
    key: str
    value: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    updated_at: datetime
    updated_by: uuid.UUID | None

    model_config = ConfigDict(populate_by_name=True)


class SchemaList(BaseModel):
    items: list[SchemaOut]


def _schema_out(row: DeviceSchema) -> SchemaOut:
    return SchemaOut(
        label=device_schemas.label_text((row.key, row.value)),
        key=row.key,
        value=row.value,
        schema_=row.schema,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


@schemas_router.get(
    "", response_model=SchemaList, operation_id="list_device_schemas", summary="Status schemas"
)
def list_schemas(_admin: Admin, session: DbSession) -> SchemaList:
    return SchemaList(items=[_schema_out(row) for row in device_schemas.list_schemas(session)])


@schemas_router.get(
    "/{label:path}", response_model=SchemaOut, operation_id="get_device_schema", summary="A label's schema"
)
def get_schema(label: str, _admin: Admin, session: DbSession) -> SchemaOut:
    return _schema_out(device_schemas.get(session, device_schemas.parse_label(label)))


@schemas_router.put(
    "/{label:path}",
    response_model=SchemaOut,
    operation_id="set_device_schema",
    responses={201: {"description": "set for the first time", "model": SchemaOut}},
    summary="Set the schema the status of every worker with this label must match",
)
def set_schema(
    label: str, body: SchemaIn, admin: Admin, session: DbSession, ctx: Ctx, response: Response
) -> SchemaOut:
    """Heartbeats are checked against it from now on (on other replicas within
    ``device_schema_cache_s``); a worker with several labels that have schemas must match them all."""
    row, created = device_schemas.put(session, device_schemas.parse_label(label), body.schema_, admin.user.id)
    session.commit()
    ctx.device_schemas.invalidate()
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _schema_out(row)


@schemas_router.delete(
    "/{label:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    operation_id="delete_device_schema",
    summary="Drop a label's schema",
)
def delete_schema(label: str, _admin: Admin, session: DbSession, ctx: Ctx) -> Response:
    device_schemas.delete(session, device_schemas.parse_label(label))
    session.commit()
    ctx.device_schemas.invalidate()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
