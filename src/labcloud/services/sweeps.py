"""Parameter sweeps: one submission that makes many jobs of one app, one per combination of a grid's values
(``{"a": [1, 2], "b": ["x", "y"]}``: four jobs) or one per set of parameters given in a list.

A sweep is a :class:`JobGroup` of kind "sweep", as a session across devices is one of kind "session"
(:mod:`labcloud.services.device_sessions`): the same rolled-up state and cancel-all. What differs is the
scale: a sweep may hold thousands of jobs, so they are checked once where they are alike (inputs, resources,
route, project) and each only for its parameters, their quotas are held in one statement for all, and they
are inserted together: one transaction and one wake-up of the dispatchers for the whole sweep, however many
jobs it makes.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from labcloud import registry
from labcloud.db.models import Job, JobEvent, JobGroup, JobInput, JobTag, Project, User
from labcloud.db.types import new_id, utcnow
from labcloud.errors import Conflict, InvalidInput
from labcloud.services import device_sessions, job_inputs, projects, quotas
from labcloud.services import jobs as job_service
from labcloud.services.job_checks import Problems
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

KIND = "sweep"
MAX_PROBLEMS = 100  # problems told of one sweep: every field of a few bad sets, bounded for ten thousand


@dataclass
class SweepRequest:
    app: str
    version: str | None = None
    entrypoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # shared by every job
    grid: dict[str, list[Any]] | None = None  # every combination of these values
    sets: list[dict[str, Any]] | None = None  # or: one job per set
    inputs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    project: str | None = None
    notify: str | None = None  # each job's mail when it ends; None: never (a sweep's jobs are many)


@dataclass
class View:
    group: JobGroup
    total: int
    state: str
    counts: dict[str, int]
    varies: list[str]  # the parameters that differ from job to job (the grid's or the sets')


# ------------------------------------------------------------------------------------------- expanding


@dataclass(frozen=True)
class Point:
    """One job's own values and where each came from in the request (for errors)."""

    values: dict[str, Any]
    where: dict[str, list[str | int]]
    own: list[str | int] | None = None  # where a value this job lacks belongs (a set's place)


def _points(req: SweepRequest, limit: int) -> tuple[list[Point], list[dict[str, Any]]]:
    """The jobs the request asks for, or the problems of its shape (each told; none expanded then)."""
    problems: list[dict[str, Any]] = []
    if (req.grid is None) == (req.sets is None):
        return [], [
            {"loc": ["body"], "msg": "give either a grid ({name: [values...]}) or sets ([{...}, ...])"}
        ]
    if req.grid is not None:
        if not req.grid:
            problems.append({"loc": ["body", "grid"], "msg": "name at least one parameter and its values"})
        for name, values in req.grid.items():
            if not isinstance(values, list) or not values:
                problems.append({"loc": ["body", "grid", name], "msg": "a list of at least one value"})
        total = 1
        for values in req.grid.values():
            total *= len(values) if isinstance(values, list) else 1
        if total > limit:
            sizes = " x ".join(str(len(v)) for v in req.grid.values())
            problems.append(
                {
                    "loc": ["body", "grid"],
                    "msg": f"{sizes} = {total} combinations; at most {limit} jobs a sweep",
                }
            )
        if problems:
            return [], problems
        names = list(req.grid)
        indexed = [list(enumerate(req.grid[n])) for n in names]
        return [
            Point(
                {n: v for n, (_, v) in zip(names, combo, strict=True)},
                {n: ["body", "grid", n, j] for n, (j, _) in zip(names, combo, strict=True)},
            )
            for combo in itertools.product(*indexed)
        ], []
    sets = req.sets or []
    if not sets:
        return [], [{"loc": ["body", "sets"], "msg": "give at least one set of parameters"}]
    if len(sets) > limit:
        return [], [{"loc": ["body", "sets"], "msg": f"{len(sets)} sets; at most {limit} jobs a sweep"}]
    return [
        Point(dict(s), {n: ["body", "sets", i, n] for n in s}, ["body", "sets", i])
        for i, s in enumerate(sets)
    ], []


def _checked_params(
    spec: registry.EntrypointSpec, shared: dict[str, Any], points: list[Point], problems: Problems
) -> list[dict[str, Any]]:
    """Each job's parameters (shared, then its own, then the defaults) checked against the entrypoint's
    schema; a problem of a job's own value is told at that value (``sets[i].name``, ``grid.name[j]``),
    one of a shared value or a missing one once."""
    told: set[tuple[str, ...]] = set()
    out: list[dict[str, Any]] = []
    for point in points:
        try:
            out.append(registry.validate_params(spec, {**shared, **point.values}))
        except InvalidInput as exc:
            for error in exc.errors or [{"loc": ["body", "params"], "msg": exc.detail}]:
                loc = list(error.get("loc", []))
                name = str(loc[2]) if len(loc) > 2 and loc[:2] == ["body", "params"] else None
                if name is not None and name in point.where:
                    loc = [*point.where[name], *loc[3:]]
                elif name is not None and name not in shared and point.own is not None:
                    loc = [*point.own, name, *loc[3:]]
                key = (*map(str, loc), str(error.get("msg")))
                if key not in told and len(told) < MAX_PROBLEMS:
                    told.add(key)
                    problems.add([{**error, "loc": loc}])
    if len(told) >= MAX_PROBLEMS:
        problems.add([{"loc": ["body"], "msg": f"more problems than these {MAX_PROBLEMS}; fix these first"}])
    return out


# ------------------------------------------------------------------------------------------- submitting


def submit(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    req: SweepRequest,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
) -> JobGroup:
    """Queue every job of the sweep, all or none (the caller commits): InvalidInput listing every problem
    (what the jobs share told once, each job's own at its place), QuotaExceeded when the project's quotas
    cannot hold them all."""
    points, shape = _points(req, settings.sweep_max_jobs)
    problems = Problems()
    problems.add(shape)
    resolved = problems.check(apps.resolve, req.app, req.version, req.entrypoint)
    all_params: list[dict[str, Any]] = []
    if resolved is not None and points:
        all_params = _checked_params(resolved.entrypoint, req.params, points, problems)
    # What every job shares is checked once, on the first job's parameters (its problems are told above).
    first = {**req.params, **(points[0].values if points else {})}
    sub = job_service.Submission(
        app=req.app,
        version=req.version,
        entrypoint=req.entrypoint,
        params=first,
        inputs=dict(req.inputs),
        env=dict(req.env),
        resources=dict(req.resources),
        name=req.name,
        tags=dict(req.tags),
        project=req.project,
        notify=req.notify or "never",
    )
    template: Job | None = None
    try:
        if resolved is not None:  # (else its problem is told already)
            template = job_service.prepare(session, settings, apps, user, sub, ceiling=ceiling)
    except InvalidInput as exc:
        problems.add(
            [
                e
                for e in exc.errors or [{"loc": ["body"], "msg": exc.detail}]
                if e.get("loc", [])[:2] != ["body", "params"]
            ]
        )
    problems.raise_any()
    assert template is not None and resolved is not None
    group = JobGroup(
        id=new_id(),
        kind=KIND,
        name=req.name.strip()[:200],
        owner_id=user.id,
        project_id=template.project_id,
        app=template.app,
        version=template.version,
        entrypoint=template.entrypoint,
        params=dict(req.params),
        notes={"varies": ",".join(dict.fromkeys(n for p in points for n in p.values))},
    )
    session.add(group)
    session.flush()
    queue_all(session, settings, user, template, all_params, group)
    return group


def queue_all(
    session: Session,
    settings: Settings,
    user: User,
    template: Job,
    all_params: list[dict[str, Any]],
    group: JobGroup,
) -> list[uuid.UUID]:
    """Insert one queued job like ``template`` for each parameter set, in ``group``: what
    :func:`labcloud.services.jobs.queue` does for one job, done for all at once (one quota statement, one
    run-number update, the rows inserted together); their ids."""
    count = len(all_params)
    project = session.get(Project, template.project_id)
    assert project is not None
    if project.over_quota == "cut":  # each job's time limit is cut to what is left then: one by one
        holds = []
        for _ in range(count):
            quotas.reserve(session, project, template, settings.default_quotas, settings.quota_min_cut_s)
            holds.append((template.quota_hold, template.resources))
    else:
        quotas.reserve(
            session, project, template, settings.default_quotas, settings.quota_min_cut_s, count=count
        )
        holds = [(template.quota_hold, template.resources)] * count
    last = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(jobs_submitted=User.jobs_submitted + count)
        .returning(User.jobs_submitted)
    ).scalar_one()
    base = (template.name or template.app).strip()
    width = len(str(count))
    # (rows, not ORM objects: a thousand jobs go in as one batched INSERT)
    now = utcnow()
    ids = [new_id() for _ in range(count)]
    rows: list[dict[str, Any]] = [
        {
            "id": job_id,
            "owner_id": user.id,
            "project_id": project.id,
            "name": f"{base} [{i + 1:0{width}d}/{count}]"[:200],
            "app": template.app,
            "version": template.version,
            "entrypoint": template.entrypoint,
            "spec": template.spec,
            "spec_hash": template.spec_hash,
            "params": params,
            "inputs": dict(template.inputs),
            "env": dict(template.env),
            "resources": resources,
            "tags": dict(template.tags),
            "executor": template.executor,
            "queue": template.queue,
            "notify": template.notify,
            "quota_hold": dict(hold) if hold else None,
            "run_number": last - count + i + 1,
            "state": JobState.QUEUED,
            "max_attempts": settings.job_max_attempts,
            "usage": {},
            "group_id": group.id,
            "created_at": now,
            "updated_at": now,
        }
        for i, (job_id, params, (hold, resources)) in enumerate(zip(ids, all_params, holds, strict=True))
    ]
    session.execute(insert(Job), rows)
    if template.tags:
        tags = [{"job_id": i, "key": k, "value": v} for i in ids for k, v in template.tags.items()]
        session.execute(insert(JobTag), tags)
    # (the events' ids are the database's: as ORM objects they would go in one INSERT each)
    session.execute(
        insert(JobEvent),
        [{"job_id": i, "from_state": None, "to_state": JobState.QUEUED, "message": "submitted"} for i in ids],
    )
    if template.inputs:  # the inputs' content is read once and pinned for every job alike
        first = session.get(Job, ids[0])
        assert first is not None
        job_inputs.pin(session, user, first)
        pinned = job_inputs.pinned(session, ids[0])
        session.add_all(_copies(pinned, ids[1:]))
        session.flush()
    return ids


def _copies(rows: Sequence[JobInput], job_ids: Sequence[uuid.UUID]) -> Iterator[JobInput]:
    for job_id in job_ids:
        for r in rows:
            yield JobInput(
                job_id=job_id,
                slot=r.slot,
                rel=r.rel,
                project_id=r.project_id,
                path=r.path,
                size=r.size,
                sha256=r.sha256,
                blob_key=r.blob_key,
            )


# ---------------------------------------------------------------------------------------------- reading


def get(session: Session, user: User, group_id: uuid.UUID) -> JobGroup:
    """The sweep if ``user`` may see it (its owner, its project's members, administrators)."""
    return device_sessions.visible_group(session, user, group_id, KIND, "sweep")


def counts_of(session: Session, group_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """The sweeps' jobs counted by state (one query for them all)."""
    out: dict[uuid.UUID, dict[str, int]] = {g: {} for g in group_ids}
    if group_ids:
        rows = session.execute(
            select(Job.group_id, Job.state, func.count())
            .where(Job.group_id.in_(list(group_ids)))
            .group_by(Job.group_id, Job.state)
        )
        for group_id, state, n in rows:
            if group_id is not None:
                out[group_id][JobState(state).value] = int(n)
    return out


def view(group: JobGroup, counts: dict[str, int]) -> View:
    """The sweep rolled up: its jobs counted by state, and one state for all of them."""
    state = device_sessions.rollup([s for s, n in counts.items() if n])  # (which states occur is enough)
    varies = [n for n in str(group.notes.get("varies", "")).split(",") if n]
    return View(group, sum(counts.values()), state, dict(sorted(counts.items())), varies)


def view_one(session: Session, group: JobGroup) -> View:
    return view(group, counts_of(session, [group.id])[group.id])


def list_sweeps(
    session: Session, user: User, project: str | None, *, limit: int, cursor: str | None
) -> Page[JobGroup]:
    """The user's sweeps (``project``: that project's, everyone's), newest first."""
    stmt = select(JobGroup).where(JobGroup.kind == KIND)
    if project is not None:
        stmt = stmt.where(JobGroup.project_id == projects.by_slug(session, user, project).id)
    else:
        stmt = stmt.where(JobGroup.owner_id == user.id)
    return paginate(session, stmt, JobGroup.id, limit=limit, cursor=cursor, newest_first=True)


def jobs_page(
    session: Session, group: JobGroup, *, limit: int, cursor: str | None, states: Sequence[JobState] = ()
) -> Page[Job]:
    """The sweep's jobs, in the order they were made (a page)."""
    stmt = select(Job).where(Job.group_id == group.id)
    if states:
        stmt = stmt.where(Job.state.in_(list(states)))
    return paginate(session, stmt, Job.id, limit=limit, cursor=cursor, newest_first=False)


def cancel_one(session: Session, job: Job) -> bool:
    """Cancel one of a sweep's jobs unless it ends first: one that moves on meanwhile (dispatched, ended)
    is taken as it now is; whether it was cancelled or is being cancelled."""
    for _ in range(3):
        if JobState(job.state) in TERMINAL:
            return False
        try:
            job_service.cancel(session, job)
            return True
        except Conflict:  # it changed state between the read and the update (refreshed): look again
            continue
    return False


def active_ids(session: Session, group: JobGroup) -> list[uuid.UUID]:
    """The sweep's jobs that have not ended (what cancel-all cancels), by id."""
    ended = [s.value for s in TERMINAL]
    return list(session.scalars(select(Job.id).where(Job.group_id == group.id, Job.state.not_in(ended))))


def cancel_all(session: Session, ids: Sequence[uuid.UUID]) -> list[Job]:
    """Cancel these jobs of a sweep (the caller has checked that it may, and commits); those cancelled or
    being cancelled, detached from the session. One at a time, each let go once done: a state change is
    checked against every job the session holds, and a thousand held made cancelling them all quadratic
    (1,000 queued jobs on SQLite: 9.6 s, 4.5 s so, on the loaded 2-core test machine)."""
    cancelled = []
    for job_id in ids:
        job = session.get(Job, job_id)
        if job is None:
            continue
        if cancel_one(session, job):
            cancelled.append(job)
        session.flush()
        session.expunge(job)
    return cancelled
