"""Sessions across devices: one submission fans out to a chosen set of workers (instruments), one job each,
with parameters shared by all and parameters of each device's own (a file prefix, a camera).

A session is a :class:`JobGroup` of kind "session"; each of its jobs names its device as the only worker
that may run it (:mod:`labcloud.services.targets`) and runs once: a device lost mid-session fails its own
part, and the device, back again, is never handed that part a second time. The session's state is rolled up
from its jobs'. A device busy in another session (holding, or queued for, another session's or job's work)
is still given its job, which waits; the session says so for that device.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud import registry
from labcloud.db.models import Job, JobGroup, User, Worker, WorkerState
from labcloud.db.types import new_id, utcnow
from labcloud.errors import InvalidInput, NotFound
from labcloud.services import jobs as job_service
from labcloud.services import projects, targets
from labcloud.services.job_checks import Problems
from labcloud.services.job_states import ACTIVE, TERMINAL, JobState
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

KIND = "session"
MAX_DEVICES = 100


@dataclass
class DeviceRequest:
    worker: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionRequest:
    app: str
    version: str | None = None
    entrypoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # shared by every device
    inputs: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    devices: list[DeviceRequest] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # or: every live device with these labels
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    project: str | None = None
    notify: str | None = None


@dataclass
class Member:
    """One device's part in a session: its job, and what was said of it."""

    worker: str
    job: Job
    note: str = ""


@dataclass
class View:
    group: JobGroup
    members: list[Member]
    state: str
    counts: dict[str, int]


def start(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    req: SessionRequest,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    known: Sequence[dict[str, Any]] = (),
) -> JobGroup:
    """Queue one job per device, all or none; InvalidInput listing every problem of every device (and the
    ``known`` ones, found before by a form)."""
    devices = _devices(session, settings, req)
    problems = Problems()
    shared: dict[tuple[str, ...], dict[str, Any]] = {}  # a problem every device has, told once
    prepared: list[tuple[DeviceRequest, Job]] = []
    for i, device in enumerate(devices):
        sub = job_service.Submission(
            app=req.app,
            version=req.version,
            entrypoint=req.entrypoint,
            params={**req.params, **device.params},
            inputs=dict(req.inputs),
            resources=dict(req.resources),
            name=f"{req.name or req.app} · {device.worker}",
            tags=dict(req.tags),
            project=req.project,
            notify=req.notify,
            workers=[device.worker],
        )
        try:
            prepared.append(
                (device, job_service.prepare(session, settings, apps, user, sub, ceiling=ceiling))
            )
        except InvalidInput as exc:
            for error in exc.errors or [{"loc": ["body"], "msg": exc.detail}]:
                loc = [str(p) for p in error.get("loc", [])]
                if loc[:2] == ["body", "params"] and len(loc) > 2 and loc[2] in device.params:
                    problems.add([{**error, "loc": ["body", "devices", i, "params", *loc[2:]]}])
                elif loc[:2] == ["body", "workers"]:
                    problems.add([{**error, "loc": ["body", "devices", i, "worker"]}])
                else:
                    shared.setdefault((*loc, str(error.get("msg"))), error)
    problems.add(list(shared.values()))
    problems.add([k for k in known if (*map(str, k.get("loc", [])), str(k.get("msg"))) not in shared])
    problems.raise_any()
    first = prepared[0][1]
    group = JobGroup(
        id=new_id(),
        kind=KIND,
        name=req.name.strip()[:200],
        owner_id=user.id,
        project_id=first.project_id,
        app=first.app,
        version=first.version,
        entrypoint=first.entrypoint,
        params=dict(req.params),
        notes={},
    )
    session.add(group)
    session.flush()
    workers = {
        w.name: w for w in session.scalars(select(Worker).where(Worker.name.in_([d.worker for d in devices])))
    }
    busy = targets.busy_with(session, [w.id for w in workers.values()], but=group.id)
    notes: dict[str, str] = {}
    for device, job in prepared:
        job.group_id = group.id
        job_service.queue(session, settings, user, job)
        job.max_attempts = 1  # a recording is not taken up again by a device that comes back
        worker = workers[device.worker]
        targets.attach(session, job, [worker])
        other = busy.get(worker.id)
        if other is not None:
            notes[str(job.id)] = _busy_note(session, other)
    group.notes = notes
    session.flush()
    return group


def _devices(session: Session, settings: Settings, req: SessionRequest) -> list[DeviceRequest]:
    """The devices named, or every live (heartbeating, active) one with the labels."""
    if req.devices and req.labels:
        raise InvalidInput.field(["body", "labels"], "name the devices or give labels, not both")
    if req.labels:
        since = utcnow() - timedelta(seconds=settings.lease_seconds)
        rows = session.scalars(
            select(Worker)
            .where(Worker.state == WorkerState.ACTIVE, Worker.last_heartbeat_at >= since)
            .order_by(Worker.name)
        )
        chosen = [
            DeviceRequest(w.name) for w in rows if all(w.labels.get(k) == v for k, v in req.labels.items())
        ]
        if not chosen:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(req.labels.items()))
            raise InvalidInput.field(["body", "labels"], f"no connected device has {wanted}")
        return chosen
    if not req.devices:
        raise InvalidInput.field(["body", "devices"], "choose at least one device")
    if len(req.devices) > MAX_DEVICES:
        raise InvalidInput.field(["body", "devices"], f"at most {MAX_DEVICES} devices in one session")
    seen: set[str] = set()
    for i, device in enumerate(req.devices):
        if device.worker in seen:
            raise InvalidInput.field(["body", "devices", i, "worker"], f"{device.worker!r} is chosen twice")
        seen.add(device.worker)
    return list(req.devices)


def _busy_note(session: Session, other: Job) -> str:
    """What a device is busy with, in words."""
    if other.group_id is not None:
        group = session.get(JobGroup, other.group_id)
        if group is not None:
            what = f"session {group.name!r}" if group.name else f"session {group.id}"
            return f"busy in {what} (job {other.id}, {other.state}); this part waits for it"
    return f"busy with job {other.id} ({other.state}); this part waits for it"


# ---------------------------------------------------------------------------------------------- reading


def get(session: Session, user: User, group_id: uuid.UUID) -> JobGroup:
    """The session if ``user`` may see it (its owner, its project's members, administrators)."""
    return visible_group(session, user, group_id, KIND, "session")


def visible_group(session: Session, user: User, group_id: uuid.UUID, kind: str, noun: str) -> JobGroup:
    """A job group of ``kind`` (a session, a sweep) if ``user`` may see it: its owner, its project's members,
    administrators; else NotFound, as for one that does not exist."""
    group = session.get(JobGroup, group_id)
    if group is None or group.kind != kind or not _may_see(session, user, group):
        raise NotFound(f"You have no {noun} with id {group_id}.")
    return group


def _may_see(session: Session, user: User, group: JobGroup) -> bool:
    if group.owner_id == user.id or user.is_admin:
        return True
    return projects.role_of(session, user.id, group.project_id) is not None


def view(session: Session, group: JobGroup) -> View:
    """The session's devices with their jobs, its state rolled up and its jobs counted by state."""
    jobs = list(session.scalars(select(Job).where(Job.group_id == group.id).order_by(Job.id)))
    named = targets.workers_of(session, [j.id for j in jobs])
    members = [Member(", ".join(named.get(j.id, [])) or "?", j, group.notes.get(str(j.id), "")) for j in jobs]
    members.sort(key=lambda m: m.worker)
    states = [str(j.state) for j in jobs]
    return View(group, members, rollup(states), dict(Counter(states)))


def rollup(states: Sequence[str]) -> str:
    """One state for a session: queued (nothing started), running (some not ended), or, once every part
    has ended, succeeded, failed, cancelled (all alike) or partial (some succeeded, some did not)."""
    if not states:
        return "queued"
    ended = [s for s in states if JobState(s) in TERMINAL]
    if len(ended) < len(states):
        started = any(JobState(s) in ACTIVE for s in states) or ended
        return "running" if started else "queued"
    if all(s == JobState.SUCCEEDED for s in states):
        return "succeeded"
    if all(s == JobState.CANCELLED for s in states):
        return "cancelled"
    if any(s == JobState.SUCCEEDED for s in states):
        return "partial"
    return "failed"


def list_sessions(
    session: Session, user: User, project: str | None, *, limit: int, cursor: str | None
) -> Page[JobGroup]:
    """The user's sessions (``project``: that project's, everyone's), newest first."""
    stmt = select(JobGroup).where(JobGroup.kind == KIND)
    if project is not None:
        stmt = stmt.where(JobGroup.project_id == projects.by_slug(session, user, project).id)
    else:
        stmt = stmt.where(JobGroup.owner_id == user.id)
    return paginate(session, stmt, JobGroup.id, limit=limit, cursor=cursor, newest_first=True)


def active_jobs(session: Session, group: JobGroup) -> list[Job]:
    """The session's jobs that have not ended (what cancel-all cancels)."""
    return list(
        session.scalars(
            select(Job).where(Job.group_id == group.id, Job.state.not_in([s.value for s in TERMINAL]))
        )
    )
