"""Workers seen as a lab's devices (instruments, rigs, the machines beside them): the status each reports of
itself with its heartbeats (``telemetry["status"]``, checked against the schemas of its labels), the
state people see (busy, idle, draining, down...), and a short history of its numbers for charts.

A heartbeat costs no more than it has to: whether to keep a history sample is decided from the worker's own
``sampled_at`` (one insert per worker per ``device_sample_interval_s``), and the schemas come from the
server's in-memory cache (:class:`~labcloud.services.device_schemas.SchemaCache`).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeGuard, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import DeviceSample, Job, ProjectMember, User, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import NotFound
from labcloud.services.device_schemas import SchemaCache
from labcloud.services.handover import ENGINE_TOKEN_PREFIX
from labcloud.services.job_states import ACTIVE
from labcloud.settings import Settings

# The device states: with a heartbeat within device_down_after_s, busy (holding jobs), idle (none) or
# draining; else down; waiting (registered, never heard from) and revoked. "up" is an executor's engine
# (Slurm's, Celery's), which has no heartbeat of its own, and, as a filter, whichever is heartbeating.
STATES = ("busy", "idle", "draining", "down", "waiting", "revoked", "up")
LIVE = frozenset({"busy", "idle", "draining", "up"})
MACHINE_FIELDS = ("load1", "disk_free_bytes", "memory_available_mb")
MACHINE_SHOWN = (
    "load1",
    "load5",
    "load15",
    "cpu_count",
    "disk_free_bytes",
    "disk_total_bytes",
    "memory_available_mb",
)
MAX_SAMPLE_FIELDS = 64  # numbers per sample: the machine's three, then the status's first ones
MAX_FIELD_NAME = 120
MAX_DEVICES = 1000  # a listing's bound
MAX_HISTORY_SAMPLES = 20_000
MAX_STATUS_ERROR = 500
PRUNE_BATCH = 5000


# ------------------------------------------------------------------------------------------- states


def down_after(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.device_down_seconds)


def is_engine(worker: Worker) -> bool:
    """An executor's engine row (Slurm, Celery): no heartbeats, no device."""
    return worker.token_prefix == ENGINE_TOKEN_PREFIX


def device_state(worker: Worker, settings: Settings, busy: bool, now: datetime | None = None) -> str:
    """busy, idle, draining, down, waiting, revoked, or up (an executor's engine)."""
    if worker.state == WorkerState.REVOKED:
        return "revoked"
    if is_engine(worker):
        return "up"
    seen = worker.last_heartbeat_at
    if seen is None:
        return "waiting"
    if (now or utcnow()) - seen > down_after(settings):
        return "down"
    if worker.state == WorkerState.DRAINING:
        return "draining"
    return "busy" if busy else "idle"


def state_matches(state: str, wanted: str) -> bool:
    return state == wanted or (wanted == "up" and state in LIVE)


# ------------------------------------------------------------------------------------------- heartbeats


def problem(field_name: str, message: str, schema: str = "") -> dict[str, str]:
    return {"field": field_name, "message": message, "schema": schema}


def _status_of(
    settings: Settings, telemetry: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """The status a heartbeat brought, or None, and what is wrong with its form (not an object, too
    large: then it is taken out of the telemetry and not kept). A worker that could not read its status
    says why in ``telemetry["status_error"]``."""
    problems = []
    error = telemetry.get("status_error")
    if error is not None:
        said = str(error)[:MAX_STATUS_ERROR]
        problems.append(problem("status", f"the worker could not read its status: {said}"))
    if "status" not in telemetry or telemetry["status"] is None:
        telemetry.pop("status", None)
        return None, problems
    status = telemetry["status"]
    if not isinstance(status, dict):
        telemetry.pop("status")
        return None, [*problems, problem("status", f"a status is a JSON object, not {_json_type(status)}")]
    size = len(json.dumps(status, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.device_status_max_bytes:
        telemetry.pop("status")
        limit = settings.device_status_max_bytes
        return None, [*problems, problem("status", f"{size} bytes as JSON; at most {limit} are kept")]
    return status, problems


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else type(value).__name__


SAMPLE = insert(cast(Table, DeviceSample.__table__))  # built once: heartbeats are frequent


class Heard(Protocol):
    """What a heartbeat needs of its worker's row (a few columns, not the whole worker)."""

    id: uuid.UUID
    labels: dict[str, str]
    status_problems: list[dict[str, str]]
    sampled_at: datetime | None


def record_heartbeat(
    session: Session,
    settings: Settings,
    schemas: SchemaCache,
    worker: Heard,
    telemetry: dict[str, Any],
    now: datetime,
) -> tuple[list[dict[str, str]], dict[str, Any], dict[str, float] | None]:
    """What a heartbeat says of the device: the status problems (for the answer); the worker's columns
    to set: its telemetry (with a status of the right form), what is wrong with its status (when that
    changed), and, once an interval, when a history sample was taken; and that sample's numbers (to insert
    with :data:`SAMPLE`), or None."""
    status, problems = _status_of(settings, telemetry)
    labels = worker.labels or {}
    if status is not None:
        problems += schemas.validate(session, settings, labels, status)
    elif (
        not problems
        and labels
        and any((key, str(value)) in schemas.current(session, settings) for key, value in labels.items())
    ):
        problems.append(problem("status", "no status was reported; this device's labels have a schema"))
    changes: dict[str, Any] = {"telemetry": telemetry}
    if worker.status_problems != problems:
        changes["status_problems"] = problems
    valid = status is not None and not problems
    due = worker.sampled_at is None or now - worker.sampled_at >= timedelta(
        seconds=settings.device_sample_interval_s
    )
    data = sample_of(telemetry, status if valid else None) if due else None
    if data:
        changes["sampled_at"] = now
    return problems, changes, data or None


def sample_of(telemetry: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, float]:
    """The numbers of one moment: the machine's load, free disk and memory, and every numeric field of a
    valid status, flattened (``status.temperature_c``, ``status.camera.fps``, ``status.fans.0``)."""
    out: dict[str, float] = {}
    for name in MACHINE_FIELDS:
        value = telemetry.get(name)
        if _is_number(value):
            out[name] = value
    if status is not None:
        _numbers(status, "status", out)
    return out


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, prefix: str, out: dict[str, float]) -> None:
    if len(out) >= MAX_SAMPLE_FIELDS or len(prefix) > MAX_FIELD_NAME:
        return
    if _is_number(value):
        out[prefix] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _numbers(item, f"{prefix}.{key}", out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _numbers(item, f"{prefix}.{index}", out)


def flat_status(status: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A status's leaves as (dotted name, value) for display: nested objects are opened, lists of plain
    values shown whole."""
    if isinstance(status, dict) and status:
        rows: list[tuple[str, Any]] = []
        for key, item in status.items():
            rows += flat_status(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix or "status", status)]


# ------------------------------------------------------------------------------------------- reading


@dataclass
class RunningJob:
    id: uuid.UUID
    name: str
    app: str
    state: str
    progress: float | None
    visible: bool  # the viewer may see it (else only that the device is busy)


@dataclass
class Device:
    worker: Worker
    state: str
    jobs: list[RunningJob] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any] | None:
        status = (self.worker.telemetry or {}).get("status")
        return status if isinstance(status, dict) else None

    @property
    def machine(self) -> dict[str, Any]:
        telemetry = self.worker.telemetry or {}
        return {name: telemetry[name] for name in MACHINE_SHOWN if name in telemetry}

    @property
    def visible_jobs(self) -> list[RunningJob]:
        return [job for job in self.jobs if job.visible]

    @property
    def hidden_jobs(self) -> int:
        return sum(1 for job in self.jobs if not job.visible)


def _running(session: Session, user: User, workers: Sequence[Worker]) -> dict[uuid.UUID, list[RunningJob]]:
    ids = [w.id for w in workers]
    if not ids:
        return {}
    rows = session.execute(
        select(
            Job.worker_id,
            Job.id,
            Job.name,
            Job.app,
            Job.state,
            Job.progress,
            Job.owner_id,
            Job.project_id,
        )
        .where(Job.worker_id.in_(ids), Job.state.in_(list(ACTIVE)))
        .order_by(Job.id)
    ).all()
    if not rows:
        return {}
    mine: set[uuid.UUID] = set()
    if not user.is_admin:
        mine = set(session.scalars(select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)))
    out: dict[uuid.UUID, list[RunningJob]] = {}
    for worker_id, job_id, name, app, state, progress, owner_id, project_id in rows:
        if worker_id is None:
            continue
        visible = user.is_admin or owner_id == user.id or project_id in mine
        out.setdefault(worker_id, []).append(RunningJob(job_id, name, app, str(state), progress, visible))
    return out


def list_devices(
    session: Session, settings: Settings, user: User, *, state: str | None = None, label: str | None = None
) -> tuple[list[Device], bool]:
    """Every worker that is not revoked (nor an executor's engine), by name, as ``user`` sees it; and
    whether there were more than a listing holds. ``state`` and ``label`` (``key=value``) filter."""
    stmt = select(Worker).where(
        Worker.state != WorkerState.REVOKED, Worker.token_prefix != ENGINE_TOKEN_PREFIX
    )
    workers = list(session.scalars(stmt.order_by(Worker.name).limit(MAX_DEVICES + 1)))
    more = len(workers) > MAX_DEVICES
    workers = workers[:MAX_DEVICES]
    if label:
        key, _, value = label.partition("=")
        workers = [w for w in workers if (w.labels or {}).get(key.strip()) == value.strip()]
    running = _running(session, user, workers)
    now = utcnow()
    devices = [
        Device(w, device_state(w, settings, bool(running.get(w.id)), now), running.get(w.id, []))
        for w in workers
    ]
    if state:
        devices = [d for d in devices if state_matches(d.state, state)]
    return devices, more


def find(session: Session, name_or_id: str) -> Worker:
    """A device by its name (or id); a revoked one is not found, nor an executor's engine."""
    worker = session.scalar(select(Worker).where(Worker.name == name_or_id))
    if worker is None:
        try:
            worker = session.get(Worker, uuid.UUID(name_or_id))
        except ValueError:
            worker = None
    if worker is None or worker.state == WorkerState.REVOKED or is_engine(worker):
        raise NotFound(f"No device named {name_or_id!r}.")
    return worker


def device(session: Session, settings: Settings, user: User, worker: Worker) -> Device:
    jobs = _running(session, user, [worker]).get(worker.id, [])
    return Device(worker, device_state(worker, settings, bool(jobs)), jobs)


@dataclass
class History:
    since: datetime
    until: datetime
    times: list[datetime]
    series: dict[str, list[float | None]]  # by field, one value (or None) per time

    @property
    def fields(self) -> list[str]:
        return list(self.series)


def history(session: Session, settings: Settings, worker: Worker, hours: float | None = None) -> History:
    """A device's samples over the last ``hours`` (at most what is kept), oldest first: the machine's
    fields, then the status's, by name."""
    until = utcnow()
    kept = settings.device_history_hours
    since = until - timedelta(hours=min(hours or kept, kept))
    newest_first = session.execute(
        select(DeviceSample.at, DeviceSample.data)
        .where(DeviceSample.worker_id == worker.id, DeviceSample.at >= since)
        .order_by(DeviceSample.at.desc())
        .limit(MAX_HISTORY_SAMPLES)
    ).all()
    rows = list(reversed(newest_first))
    names: set[str] = set()
    for _, data in rows:
        names.update(data)
    ordered = [n for n in MACHINE_FIELDS if n in names] + sorted(n for n in names if n not in MACHINE_FIELDS)
    series = {name: [_float(data.get(name)) for _, data in rows] for name in ordered}
    return History(since, until, [at for at, _ in rows], series)


def _float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def prune(db: Database, settings: Settings, now: datetime | None = None) -> int:
    """Remove samples older than ``device_history_hours``; how many."""
    cutoff = (now or utcnow()) - timedelta(hours=settings.device_history_hours)
    removed = 0
    while True:  # in batches: a long outage's backlog never holds the database's write lock for long
        with db.session() as session:
            ids = list(
                session.scalars(select(DeviceSample.id).where(DeviceSample.at < cutoff).limit(PRUNE_BATCH))
            )
            if ids:
                session.execute(delete(DeviceSample).where(DeviceSample.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            return removed
