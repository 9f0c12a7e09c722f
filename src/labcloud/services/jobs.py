"""Jobs: submit, read, list, cancel, rerun, delete, and every state change (through one function)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, defer

from labcloud import registry
from labcloud.db.models import Job, JobEvent, JobTag, Project, User
from labcloud.db.types import new_id
from labcloud.errors import Conflict, InvalidInput, NotFound
from labcloud.registry.models import Resources
from labcloud.services import files, projects, quotas, routing, spaces
from labcloud.services.job_logs import job_dir
from labcloud.services.job_logs import log_path as log_path  # the executors' name for it
from labcloud.services.job_states import TERMINAL, JobState
from labcloud.services.lifecycle import transition
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

T = TypeVar("T")


@dataclass
class Submission:
    app: str
    version: str | None = None
    entrypoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    project: str | None = None  # a project's slug; None: the submitter's personal project
    notify: str | None = None  # this job's e-mail when it ends: always, failure, never (None: the owner's)


@dataclass
class JobFilter:
    states: list[JobState] = field(default_factory=list)
    app: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    project: str | None = None  # a project's jobs (everyone's); None: the caller's own jobs


# ------------------------------------------------------------------------------------------- submitting


def submit(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    sub: Submission,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    rerun_of: uuid.UUID | None = None,
) -> Job:
    """Queue a job. ``ceiling``: the most an executor (by name) can ever give a job; more is refused."""
    resolved = apps.resolve(sub.app, sub.version, sub.entrypoint)
    spec = resolved.entrypoint
    # Every problem at once (a form shows each next to its field), not only the first group's.
    problems = _Problems()
    params = problems.check(lambda: registry.validate_params(spec, sub.params)) or {}
    inputs = problems.check(lambda: registry.validate_inputs(spec, sub.inputs)) or {}
    for slot, raw in list(inputs.items()):
        loc: list[str | int] = ["body", "inputs", slot]
        entry = problems.check(spaces.job_input, session, user, raw, loc)
        inputs[slot] = files.clean(raw, loc) if entry is not None else raw  # as the submitter named it
    problems.check(lambda: registry.job_environment(spec, params, {}, "", sub.env))  # the env allowlist
    resources = problems.check(lambda: _resources(spec, sub.resources))
    where = (
        problems.check(
            lambda: routing.route(settings, resolved.app.name, resolved.entrypoint_name, spec, resources)
        )
        if resources is not None
        else None
    )
    if where is not None and resources is not None:
        problems.check(lambda: within(resources, (ceiling(where.executor) if ceiling else None) or {}))
    problems.check(lambda: check_tags(sub.tags))
    project = problems.check(projects.for_submit, session, user, sub.project)
    problems.raise_any()
    assert resources is not None and project is not None  # (raise_any raised otherwise)
    return queue(
        session,
        settings,
        user,
        Job(
            name=sub.name.strip()[:200],
            app=resolved.app.name,
            version=resolved.version,
            entrypoint=resolved.entrypoint_name,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.spec_hash(),
            params=params,
            inputs=inputs,
            env=dict(sub.env),
            resources=resources,
            tags=dict(sub.tags),
            executor=where.executor if where else settings.executor,
            queue=where.queue if where else None,
            rerun_of=rerun_of,
            project_id=project.id,
            notify=sub.notify,
        ),
    )


def queue(session: Session, settings: Settings, user: User, job: Job) -> Job:
    """Insert a checked job of ``user``, queued, with its tags and its history's first event."""
    job.id = new_id()  # known before the insert, so job, tags and event go in one flush
    job.owner_id = user.id
    project = (
        projects.personal(session, user) if job.project_id is None else session.get(Project, job.project_id)
    )
    assert project is not None
    job.project_id = project.id
    # QuotaExceeded (409) when the project's quotas cannot hold it
    quotas.reserve(session, project, job, settings.default_quotas, settings.quota_min_cut_s)
    job.state = JobState.QUEUED
    job.max_attempts = settings.job_max_attempts
    job.usage = {}
    session.add(job)
    session.add_all(JobTag(job_id=job.id, key=k, value=v) for k, v in job.tags.items())
    session.add(JobEvent(job_id=job.id, from_state=None, to_state=JobState.QUEUED, message="submitted"))
    session.flush()
    return job


class _Problems:
    """Collects InvalidInput errors from several checks, to raise them together."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.first: InvalidInput | None = None

    def check(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except InvalidInput as exc:
            self.first = self.first or exc
            self.errors += exc.errors or [{"loc": ["body"], "msg": exc.detail}]
            return None

    def raise_any(self) -> None:
        if self.first is not None:
            detail = (
                self.first.detail
                if len(self.errors) == 1
                else f"{len(self.errors)} problems in the submission"
            )
            raise type(self.first)(detail, errors=self.errors)


RESOURCE_LIMITS = {
    "cpus": (0.01, 1024.0),
    "memory_mb": (1, 16 * 1024 * 1024),
    "gpus": (0, 64),
    "timeout_s": (1, 30 * 86400),
}


def _resources(spec: registry.EntrypointSpec, overrides: dict[str, Any]) -> Resources:
    resources = spec.resources.model_dump()
    errors = []
    for key, value in overrides.items():
        if key not in RESOURCE_LIMITS:
            errors.append(
                {
                    "loc": ["body", "resources", key],
                    "msg": f"unknown resource; known: {', '.join(RESOURCE_LIMITS)}",
                }
            )
            continue
        low, high = RESOURCE_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            errors.append(
                {"loc": ["body", "resources", key], "msg": f"must be a number from {low:g} to {high:g}"}
            )
            continue
        resources[key] = int(value) if key != "cpus" else float(value)
    if errors:
        raise InvalidInput("Some resources are not valid.", errors=errors)
    return Resources.model_validate(resources)


def within(resources: Resources, ceiling: dict[str, float]) -> None:
    needs = resources.needs()
    errors = [
        {
            "loc": ["body", "resources", key],
            "msg": f"needs {needs[key]:g}; this installation offers at most {limit:g}",
        }
        for key, limit in ceiling.items()
        if needs.get(key, 0.0) > limit
    ]
    if errors:
        raise InvalidInput("Some resources are not valid.", errors=errors)


def check_tags(tags: dict[str, str]) -> None:
    errors = []
    if len(tags) > 20:
        errors.append({"loc": ["body", "tags"], "msg": "at most 20 tags"})
    for key, value in tags.items():
        if not key or len(key) > 64 or not isinstance(value, str) or len(value) > 200:
            errors.append(
                {"loc": ["body", "tags", key], "msg": "tag names have 1-64 characters, values at most 200"}
            )
    if errors:
        raise InvalidInput("Some tags are not valid.", errors=errors)


# ---------------------------------------------------------------------------------------------- reading


def get_job(
    session: Session, user: User, job_id: uuid.UUID, action: projects.Action = projects.Action.READ
) -> Job:
    """The job if ``user`` may do ``action`` with it (:func:`labcloud.services.projects.authorize_job`):
    a job the user may not see is 'not found'; one they see but may not change is 'forbidden'."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"You have no job with id {job_id}.")
    projects.authorize_job(session, user, job, action)
    return job


def list_jobs(session: Session, user: User, flt: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
    # The entrypoint spec is the bulkiest column and listings do not show it.
    stmt: Select[Any] = select(Job).options(defer(Job.spec))
    if flt.project:
        stmt = stmt.where(Job.project_id == projects.by_slug(session, user, flt.project).id)
    else:
        stmt = stmt.where(Job.owner_id == user.id)
    if flt.states:
        stmt = stmt.where(Job.state.in_(list(flt.states)))
    if flt.app:
        stmt = stmt.where(Job.app == flt.app)
    for key, value in flt.tags.items():
        tagged = select(JobTag.job_id).where(JobTag.key == key, JobTag.value == value)
        stmt = stmt.where(Job.id.in_(tagged))
    if flt.created_after:
        stmt = stmt.where(Job.created_at >= flt.created_after)
    if flt.created_before:
        stmt = stmt.where(Job.created_at < flt.created_before)
    return paginate(session, stmt, Job.id, limit=limit, cursor=cursor, newest_first=True)


@dataclass(frozen=True)
class Names:
    """What jobs refer to by id, in words: their projects' slugs and their owners' e-mails."""

    projects: dict[uuid.UUID, str]
    owners: dict[uuid.UUID, str]


def names_of(session: Session, jobs: Sequence[Job]) -> Names:
    """The names of the jobs' projects and owners (two queries for a whole page)."""
    owners: dict[uuid.UUID, str] = {}
    wanted = {job.owner_id for job in jobs}
    if wanted:
        owners = {i: e for i, e in session.execute(select(User.id, User.email).where(User.id.in_(wanted)))}
    return Names(projects.slugs(session, [job.project_id for job in jobs]), owners)


def events(session: Session, job: Job) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


# ------------------------------------------------------------------------------------------- changing


def cancel(session: Session, job: Job) -> Job:
    """Queued: cancelled at once. Holding a process: cancelling, and the runner finishes the job off."""
    state = JobState(job.state)
    if state == JobState.QUEUED:
        return transition(session, job, JobState.CANCELLED, message="cancelled before it started")
    if state == JobState.CANCELLING:
        return job
    if state in TERMINAL:
        raise Conflict(f"Job {job.id} has already ended ({state.value}); there is nothing to cancel.")
    return transition(session, job, JobState.CANCELLING, message="cancel requested")


RerunImage = Literal["pinned", "current"]


def rerun(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    job: Job,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    image: RerunImage = "pinned",
) -> Job:
    """The same app version, entrypoint, parameters and inputs again, as a new job. A container job's
    rerun runs the image its job ran (by content id, even if its tag moved since) unless ``image`` is
    "current": then whatever its reference names now."""
    sub = Submission(
        app=job.app,
        version=job.version,
        entrypoint=job.entrypoint,
        params=dict(job.params),
        inputs=dict(job.inputs),
        env=dict(job.env),
        resources=job.resources.model_dump(),
        name=job.name,
        tags=dict(job.tags),
        project=_slug(session, job.project_id),
    )
    new = submit(session, settings, apps, user, sub, ceiling=ceiling, rerun_of=job.id)
    if image == "pinned" and job.image and new.spec.get("image") == job.spec.get("image"):
        new.image = job.image  # the same container image, by its content id, even if its tag moved since
    return new


def _slug(session: Session, project_id: uuid.UUID) -> str:
    project = session.get(Project, project_id)
    if project is None or project.personal_user_id is not None:
        return projects.PERSONAL  # (a rerun of another's personal job goes to the rerunner's own)
    return project.slug


def delete(session: Session, settings: Settings, job: Job) -> None:
    if JobState(job.state) not in TERMINAL:
        raise Conflict(f"Job {job.id} is {job.state}; cancel it and wait for it to end before deleting it.")
    session.delete(job)
    session.flush()
    shutil.rmtree(job_dir(settings, job.id), ignore_errors=True)
