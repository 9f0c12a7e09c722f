"""Remote workers: registration, authentication, heartbeats, drain and revocation. What a worker does with
jobs is elsewhere: claims and leases (:mod:`.claims`), job tokens (:mod:`.job_tokens`), and the hand-over of
jobs to engines (:mod:`.handover`)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from labcloud.db.models import Job, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, LabcloudError, NotFound, Unauthorized
from labcloud.services import devices
from labcloud.services.claims import heartbeat_interval, lose
from labcloud.services.device_schemas import SchemaCache
from labcloud.services.handover import ENGINE_TOKEN_PREFIX
from labcloud.services.job_states import ACTIVE, JobState
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

WORKER_TOKEN_PREFIX = "lcw_"


MAX_LOCATION = 200
MAX_DESCRIPTION = 2000


def register(
    session: Session,
    name: str,
    labels: dict[str, str],
    *,
    location: str = "",
    description: str = "",
) -> tuple[Worker, str]:
    name = check_name(session, name)
    secret = WORKER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    worker = Worker(
        name=name,
        labels=_check_labels(labels, ["body", "labels"]),
        location=check_location(location),
        description=check_description(description),
        token_hash=_digest(secret),
        token_prefix=secret[:12],
    )
    session.add(worker)
    session.flush()
    return worker, secret


def check_name(session: Session, name: str, worker: Worker | None = None) -> str:
    """A new name (of ``worker``, when renamed): 1-100 characters, none of them a control character or a
    slash (it is part of the device page's address), not another worker's."""
    name = name.strip()
    loc: list[str | int] = ["body", "name"]
    if not name:
        raise InvalidInput.field(loc, "a worker needs a name")
    if len(name) > 100:
        raise InvalidInput.field(loc, "at most 100 characters")
    if "/" in name or _has_control(name):
        raise InvalidInput.field(loc, "no slashes or control characters")
    taken = session.scalar(select(Worker).where(Worker.name == name))
    if taken is not None and taken is not worker:
        raise Conflict(f"A worker named '{name}' exists; pick another name or revoke it first.")
    return name


def check_location(location: str) -> str:
    """Where it is, in one line of up to 200 characters."""
    location = location.strip()
    if len(location) > MAX_LOCATION:
        raise InvalidInput.field(["body", "location"], f"at most {MAX_LOCATION} characters")
    if _has_control(location):
        raise InvalidInput.field(["body", "location"], "one line, without control characters")
    return location


def check_description(description: str) -> str:
    """What it is, in up to 2000 characters (lines and tabs allowed, no other control characters)."""
    description = description.strip().replace("\r\n", "\n")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput.field(["body", "description"], f"at most {MAX_DESCRIPTION} characters")
    if _has_control(description, allowed="\n\t"):
        raise InvalidInput.field(["body", "description"], "no control characters (lines and tabs are fine)")
    return description


def _has_control(text: str, allowed: str = "") -> bool:
    return any((ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029") and c not in allowed for c in text)


def update(
    session: Session,
    worker: Worker,
    *,
    name: str | None = None,
    location: str | None = None,
    description: str | None = None,
) -> Worker:
    """Rename it, or say again where and what it is (None: unchanged). Its token, labels and jobs stay."""
    if worker.state == WorkerState.REVOKED:
        raise Conflict("This worker was revoked.")
    if worker.token_prefix == ENGINE_TOKEN_PREFIX:  # found by its name when jobs are handed to it
        raise Conflict("This is an executor's engine, not a worker of its own; it keeps its name.")
    if name is not None:
        worker.name = check_name(session, name, worker)
    if location is not None:
        worker.location = check_location(location)
    if description is not None:
        worker.description = check_description(description)
    return worker


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_labels(labels: dict[str, str], loc: list[str | int]) -> dict[str, str]:
    for key, value in labels.items():
        if not key or len(key) > 64 or len(str(value)) > 200:
            raise InvalidInput.field(loc, f"label '{key[:64]}': keys are 1-64 characters, values up to 200")
    return {str(k): str(v) for k, v in labels.items()}


def authenticate(session: Session, credential: str) -> Worker:
    if not credential.startswith(WORKER_TOKEN_PREFIX):
        raise Unauthorized("This needs a worker token (lcw_...).")
    worker = session.scalar(select(Worker).where(Worker.token_hash == _digest(credential)))
    if worker is None or worker.state == "revoked":
        raise Unauthorized("The worker token is unknown or was revoked.")
    return worker


def check_token(session: Session, credential: str) -> uuid.UUID:
    """The id of the worker whose token this is (Unauthorized for none, or a revoked one): a look at two
    columns only, for the gate every call of the protocol passes."""
    if not credential.startswith(WORKER_TOKEN_PREFIX):
        raise Unauthorized("This needs a worker token (lcw_...).")
    found = session.execute(
        select(Worker.id, Worker.state).where(Worker.token_hash == _digest(credential))
    ).first()
    if found is None or found.state == WorkerState.REVOKED:
        raise Unauthorized("The worker token is unknown or was revoked.")
    worker_id: uuid.UUID = found.id
    return worker_id


class KnownTokens:
    """Worker tokens found valid lately, by their digest, for ``ttl_s`` seconds: for a gate that would look
    each up before every heartbeat and claim. Only good for letting a request's body be read: whoever
    acts on the request checks the worker in the database again (a revoked token counts at once)."""

    def __init__(self, ttl_s: float = 600.0, most: int = 10_000) -> None:
        self.ttl_s, self.most = ttl_s, most
        self._lock = threading.Lock()
        self._known: dict[str, tuple[uuid.UUID, float]] = {}

    def get(self, credential: str) -> uuid.UUID | None:
        if not credential.startswith(WORKER_TOKEN_PREFIX):
            return None
        with self._lock:
            found = self._known.get(_digest(credential))
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def remember(self, credential: str, worker_id: uuid.UUID) -> None:
        with self._lock:
            if len(self._known) >= self.most:
                self._known.clear()
            self._known[_digest(credential)] = (worker_id, time.monotonic() + self.ttl_s)


def get(session: Session, worker_id: uuid.UUID) -> Worker:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"No worker {worker_id}.")
    return worker


def state_of(worker: Worker, settings: Settings, now: datetime | None = None) -> str:
    """active, draining, revoked, waiting (registered, no heartbeat yet) or lost (no heartbeat for longer
    than a lease)."""
    if worker.state == "revoked":
        return "revoked"
    if worker.token_prefix == ENGINE_TOKEN_PREFIX:  # Slurm's or Celery's: no heartbeats of its own
        return worker.state
    now = now or utcnow()
    seen = worker.last_heartbeat_at
    if seen is None:
        return "waiting" if worker.state == "active" else worker.state
    if now - seen > timedelta(seconds=settings.lease_seconds):
        return "lost"
    return worker.state


def running_jobs(session: Session, worker_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    rows = session.execute(
        select(Job.worker_id, Job.id).where(Job.worker_id.in_(worker_ids), Job.state.in_(list(ACTIVE)))
    ).all()
    out: dict[uuid.UUID, list[uuid.UUID]] = {}
    for worker_id, job_id in rows:
        if worker_id is not None:
            out.setdefault(worker_id, []).append(job_id)
    return out


def list_workers(session: Session, *, limit: int, cursor: str | None) -> Page[Worker]:
    return paginate(session, select(Worker), Worker.id, limit=limit, cursor=cursor, newest_first=False)


def drain(session: Session, worker: Worker) -> Worker:
    if worker.state == "revoked":
        raise Conflict("This worker was revoked.")
    worker.state = WorkerState.DRAINING
    return worker


def revoke(session: Session, worker: Worker) -> Worker:
    """The token stops working at once; the worker's jobs are queued again (or failed) now."""
    worker.state = WorkerState.REVOKED
    worker.revoked_at = utcnow()
    for job in session.scalars(select(Job).where(Job.worker_id == worker.id, Job.state.in_(list(ACTIVE)))):
        lose(session, job, "its worker's token was revoked")
    return worker


# A heartbeat's statements, built once: hundreds of devices heartbeat every few seconds, and building a
# statement (and its cache key) each time, or loading and flushing a Worker through the ORM, was most of
# what a heartbeat cost. It reads a few columns of its worker and writes what the heartbeat said.
_WORKERS = cast(Table, Worker.__table__)
_HEARD = select(
    _WORKERS.c.id, _WORKERS.c.state, _WORKERS.c.labels, _WORKERS.c.status_problems, _WORKERS.c.sampled_at
).where(_WORKERS.c.id.in_(bindparam("worker_ids", expanding=True)))
_SAID = ("last_heartbeat_at", "capacity", "version", "engines", "engine_problem", "telemetry")
_SAY = (
    _WORKERS.update()
    .where(_WORKERS.c.id == bindparam("worker_id", type_=_WORKERS.c.id.type))
    .values(
        {
            name: bindparam(f"new_{name}", type_=_WORKERS.c[name].type)
            for name in (*_SAID, "status_problems", "sampled_at")
        }
    )
)


@dataclass
class _Heard:
    """What a heartbeat reads of its worker."""

    id: uuid.UUID
    state: str
    labels: dict[str, str]
    status_problems: list[dict[str, str]]
    sampled_at: datetime | None


def heartbeat(
    session: Session,
    settings: Settings,
    worker_id: uuid.UUID,
    body: dict[str, Any],
    schemas: SchemaCache | None = None,
) -> dict[str, Any]:
    """Renew the leases of the jobs the worker holds, keep what it says of itself (its status checked
    against the schemas of its labels: ``schemas``, the server's cache), and answer with the jobs to
    cancel or abandon and what is wrong with its status. Unauthorized for a worker revoked (or removed)
    since its token was checked."""
    [outcome] = heartbeats(session, settings, [(worker_id, body)], schemas)
    if isinstance(outcome, LabcloudError):
        raise outcome
    return outcome


def heartbeats(
    session: Session,
    settings: Settings,
    beats: list[tuple[uuid.UUID, dict[str, Any]]],
    schemas: SchemaCache | None = None,
) -> list[dict[str, Any] | LabcloudError]:
    """:func:`heartbeat` for many workers' heartbeats at once, in a few statements for all: the answer of
    each, or why it was refused (Unauthorized: that one wrote nothing). A worker's second heartbeat in
    one batch is written after its first."""
    schemas = schemas or SchemaCache()
    connection = session.connection()
    found = connection.execute(_HEARD, {"worker_ids": list({w for w, _ in beats})})
    rows = {row.id: _Heard(*row) for row in found}
    now = utcnow()
    outcomes: list[dict[str, Any] | LabcloudError] = []
    updates: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    held_by: list[dict[uuid.UUID, int]] = []
    for worker_id, body in beats:
        row = rows.get(worker_id)
        if row is None or row.state == WorkerState.REVOKED:
            outcomes.append(Unauthorized("The worker token is unknown or was revoked."))
            held_by.append({})
            continue
        held_by.append({uuid.UUID(str(j["id"])): int(j["attempt"]) for j in body.get("jobs") or []})
        telemetry = dict(body.get("telemetry") or {})
        problems, heard, sample = devices.record_heartbeat(session, settings, schemas, row, telemetry, now)
        said = {
            "last_heartbeat_at": now,
            "capacity": dict(body.get("capacity") or {}) | {"free": dict(body.get("free") or {})},
            "version": str(body.get("version") or "")[:64],
            "engines": _engines(body),
            "engine_problem": str(body.get("engine_problem") or ""),
            "status_problems": row.status_problems,
            "sampled_at": row.sampled_at,
            **heard,
        }
        updates.append({"worker_id": worker_id} | {f"new_{k}": v for k, v in said.items()})
        if sample is not None:
            samples.append({"worker_id": worker_id, "at": now, "data": sample})
        # As this heartbeat left it, for the worker's next one in the same batch.
        row.status_problems, row.sampled_at = said["status_problems"], said["sampled_at"]
        outcomes.append(
            {
                "state": str(row.state),
                "lease_seconds": settings.lease_seconds,
                "heartbeat_interval_s": heartbeat_interval(settings),
                "cancel": [],
                "abort": [],
                "status_problems": problems,
            }
        )
    if updates:
        connection.execute(_SAY, updates)
    if samples:
        connection.execute(devices.SAMPLE, samples)
    if any(held_by):
        _renew_leases(session, settings, beats, held_by, outcomes, now)
    return outcomes


def _engines(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "kind": str(e["kind"]),
            "images": [str(i) for i in e.get("images") or []],
            "image_ids": {str(ref): str(i) for ref, i in (e.get("image_ids") or {}).items()},
        }
        for e in body.get("engines") or []
    ]


def _renew_leases(
    session: Session,
    settings: Settings,
    beats: list[tuple[uuid.UUID, dict[str, Any]]],
    held_by: list[dict[uuid.UUID, int]],
    outcomes: list[dict[str, Any] | LabcloudError],
    now: datetime,
) -> None:
    """Renew the leases of the jobs each heartbeat says its worker holds (when it still does), and tell
    it which of them to cancel and which to abandon (no longer its own)."""
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    ids = list({job_id for held in held_by for job_id in held})
    found = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
    for (worker_id, _), held, outcome in zip(beats, held_by, outcomes, strict=True):
        if isinstance(outcome, LabcloudError):
            continue
        for job_id, attempt in held.items():
            job = found.get(job_id)
            mine = (
                job is not None
                and job.worker_id == worker_id
                and job.attempts == attempt
                and JobState(job.state) in ACTIVE
            )
            if not mine:
                outcome["abort"].append(job_id)
                continue
            assert job is not None
            job.lease_expires_at = lease_until
            if job.state == JobState.CANCELLING:
                outcome["cancel"].append(job_id)


def container_workers(session: Session, settings: Settings) -> int:
    """How many active workers heartbeating now reported a container engine."""
    return len(with_engines(session, settings))


def with_engines(session: Session, settings: Settings) -> list[Worker]:
    """The active workers heartbeating now (within a lease) that reported a container engine, by name."""
    since = utcnow() - timedelta(seconds=settings.lease_seconds)
    rows = session.scalars(
        select(Worker)
        .where(Worker.state == WorkerState.ACTIVE, Worker.last_heartbeat_at >= since)
        .order_by(Worker.name)
    )
    return [worker for worker in rows if worker.engines]
