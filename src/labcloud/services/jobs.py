"""Jobs: submit, read, list, cancel, rerun, delete, and every state change (through one function)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, defer

from labcloud import registry
from labcloud.db.models import FileEntry, Job, JobEvent, JobInput, JobTag, Project, User, Worker
from labcloud.db.types import new_id
from labcloud.errors import Conflict, Forbidden, NotFound
from labcloud.services import audit, files, job_files, job_inputs, projects, quotas, routing, spaces, targets
from labcloud.services.job_checks import Problems, amount, check_tags, resources_asked, within
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
    workers: list[str] = field(default_factory=list)  # it runs only on one of these (by name)


@dataclass
class JobFilter:
    states: list[JobState] = field(default_factory=list)
    app: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    project: str | None = None  # a project's jobs (everyone's); None: the caller's own jobs
    text: str | None = None  # what the job's name contains, in any case
    everyone: bool = False  # every user's jobs (administrators only)
    oldest_first: bool = False


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
    known: Sequence[dict[str, Any]] = (),
    inputs_of: Job | None = None,
) -> Job:
    """Queue a job. ``ceiling``: the most an executor (by name) can ever give a job; more is refused.
    ``inputs_of``: a job whose inputs' content this one takes (a rerun of it), rather than what the paths
    hold now."""
    job = prepare(
        session,
        settings,
        apps,
        user,
        sub,
        ceiling=ceiling,
        rerun_of=rerun_of,
        known=known,
        read_inputs=inputs_of is None,
    )
    job = queue(session, settings, user, job, inputs_of=inputs_of)
    if sub.workers:
        workers, _ = targets.resolve(session, sub.workers, ["body", "workers"])
        targets.attach(session, job, workers)
    return job


def prepare(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    sub: Submission,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    rerun_of: uuid.UUID | None = None,
    known: Sequence[dict[str, Any]] = (),
    read_inputs: bool = True,
) -> Job:
    """The job a submission asks for, checked but not stored; InvalidInput listing every problem, with
    ``known`` ones (found before, e.g. by a form) among them. ``read_inputs`` false: the inputs' files are
    not looked up (their content comes from the job rerun)."""
    resolved = apps.resolve(sub.app, sub.version, sub.entrypoint)
    spec = resolved.entrypoint
    # Every problem at once (a form shows each next to its field), not only the first group's.
    problems = Problems()
    params = problems.check(lambda: registry.validate_params(spec, sub.params)) or {}
    inputs = problems.check(lambda: registry.validate_inputs(spec, sub.inputs)) or {}
    for slot, raw in list(inputs.items()) if read_inputs else ():
        loc: list[str | int] = ["body", "inputs", slot]
        entry = problems.check(spaces.job_input, session, user, raw, loc)
        inputs[slot] = files.clean(raw, loc) if entry is not None else raw  # as the submitter named it
        wanted = spec.inputs[slot]
        if entry is not None and (
            entry.kind != wanted.type or (entry.kind == "file" and not wanted.takes(entry.name))
        ):
            problems.add([{"loc": loc, "msg": f"takes {wanted.expects()}; {entry.path!r} is not one"}])
    problems.check(lambda: registry.job_environment(spec, params, {}, "", sub.env))  # the env allowlist
    resources, bad_resources = resources_asked(spec, sub.resources)
    problems.add(bad_resources)
    where = problems.check(
        lambda: routing.route(settings, resolved.app.name, resolved.entrypoint_name, spec, resources)
    )
    if sub.workers:
        problems.add(targets.resolve(session, sub.workers, ["body", "workers"])[1])
        if where is not None and where.executor != routing.LABELLED:
            if spec.executor:
                why = f"this entrypoint runs on the '{spec.executor}' executor, not on workers by name"
                problems.add([{"loc": ["body", "workers"], "msg": why}])
            else:  # named workers are pull workers: it goes to them whatever the routes say
                where = routing.Destination(routing.LABELLED, where.queue)
    if where is not None:
        limits = (ceiling(where.executor) if ceiling else None) or {}
        for error in bad_resources:  # over every installation's bound, and over this one's: say this one's
            key, asked = error["loc"][-1], sub.resources.get(error["loc"][-1])
            if key in limits and isinstance(asked, int | float) and asked > limits[key]:
                error["msg"] = f"at most {amount(limits[key], key)} here (asked for {amount(asked, key)})"
        told = {e["loc"][-1] for e in bad_resources}  # (a bad value is told once)
        problems.check(lambda: within(resources, {k: v for k, v in limits.items() if k not in told}))
    problems.check(lambda: check_tags(sub.tags))
    project = problems.check(projects.for_submit, session, user, sub.project)
    problems.add(known)
    problems.raise_any()
    assert project is not None  # (raise_any raised otherwise)
    return Job(
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
    )


def queue(session: Session, settings: Settings, user: User, job: Job, *, inputs_of: Job | None = None) -> Job:
    """Insert a checked job of ``user``, queued, with its tags, its history's first event and its inputs'
    content (what the paths hold now, or what ``inputs_of`` ran with)."""
    job.id = new_id()  # known before the insert, so job, tags and event go in one flush
    job.owner_id = user.id
    project = (
        projects.personal(session, user) if job.project_id is None else session.get(Project, job.project_id)
    )
    assert project is not None
    job.project_id = project.id
    # QuotaExceeded (409) when the project's quotas cannot hold it
    quotas.reserve(session, project, job, settings.default_quotas, settings.quota_min_cut_s)
    job.run_number = session.execute(  # (one conditional update: concurrent submits get distinct numbers)
        update(User)
        .where(User.id == user.id)
        .values(jobs_submitted=User.jobs_submitted + 1)
        .returning(User.jobs_submitted)
    ).scalar_one()
    job.state = JobState.QUEUED
    job.max_attempts = settings.job_max_attempts
    job.usage = {}
    session.add(job)
    session.add_all(JobTag(job_id=job.id, key=k, value=v) for k, v in job.tags.items())
    session.add(JobEvent(job_id=job.id, from_state=None, to_state=JobState.QUEUED, message="submitted"))
    session.flush()
    if inputs_of is not None:
        job_inputs.copy(session, user, inputs_of, job)
    else:
        job_inputs.pin(session, user, job)
    return job


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


@dataclass
class InputFile:
    """A file one of a job's inputs brought: its pinned content, whether its path still holds it, and
    whether the reader may fetch it."""

    pin: JobInput
    now: job_inputs.Now
    readable: bool
    source: str  # where it was, as a user names it (projects/<slug>/... for a project's file)


def input_files(session: Session, user: User, job_id: uuid.UUID) -> list[InputFile]:
    """What the job's inputs were, file by file, for whoever sees the job."""
    return inputs_of(session, user, get_job(session, user, job_id))


def inputs_of(session: Session, user: User, job: Job) -> list[InputFile]:
    """:func:`input_files` of a job ``user`` was already let see."""
    rows = job_inputs.pinned(session, job.id)
    now = job_inputs.now_at(session, rows)
    may: dict[uuid.UUID, tuple[bool, str]] = {}
    out = []
    for row in rows:
        if row.project_id not in may:
            may[row.project_id] = (
                job_inputs.readable(session, user, row),
                spaces.prefix_of(session, row.project_id),
            )
        readable, prefix = may[row.project_id]
        out.append(InputFile(row, now[row.id], readable, prefix + row.path))
    return out


def input_file(session: Session, user: User, job_id: uuid.UUID, slot: str, rel: str) -> JobInput:
    """The content one of the job's input files was pinned to, if ``user`` may read it (NotFound else)."""
    job = get_job(session, user, job_id)
    row = job_inputs.one(session, job.id, slot, rel)
    if not job_inputs.readable(session, user, row):
        raise NotFound(f"The job's input {slot!r} has no file '{rel}' you may read.")
    return row


def outputs(session: Session, user: User, job_id: uuid.UUID) -> list[FileEntry]:
    """The output files of a job ``user`` may read, as they are now in its project's space
    (:func:`labcloud.services.files.job_outputs`)."""
    job = get_job(session, user, job_id)
    return job_files.job_outputs(session, job.project_id, job.id)


def output(session: Session, user: User, job_id: uuid.UUID, rel: str) -> FileEntry:
    """One output file of a job ``user`` may read, by its clean path in the job's folder."""
    wanted = f"{job_files.job_outputs_folder(job_id)}/{rel}"
    for row in outputs(session, user, job_id):
        if row.path == wanted:
            return row
    raise NotFound(f"Job {job_id} has no output '{rel}'.")


def list_jobs(session: Session, user: User, flt: JobFilter, *, limit: int, cursor: str | None) -> Page[Job]:
    # The entrypoint spec is the bulkiest column and listings do not show it.
    stmt = filtered(session, user, flt, select(Job).options(defer(Job.spec)))
    return paginate(session, stmt, Job.id, limit=limit, cursor=cursor, newest_first=not flt.oldest_first)


def filtered(session: Session, user: User, flt: JobFilter, stmt: Select[Any]) -> Select[Any]:
    """``stmt`` (a select from jobs) narrowed to the jobs ``flt`` asks for among those ``user`` may list:
    their own by default, a project's (with a role in it), everyone's (administrators)."""
    if flt.everyone and not user.is_admin:
        raise Forbidden("Only administrators see every user's jobs.")
    if flt.project:
        stmt = stmt.where(Job.project_id == projects.by_slug(session, user, flt.project).id)
    elif not flt.everyone:
        stmt = stmt.where(Job.owner_id == user.id)
    if flt.states:
        stmt = stmt.where(Job.state.in_(list(flt.states)))
    if flt.app:
        stmt = stmt.where(Job.app == flt.app)
    for key, value in flt.tags.items():
        tagged = select(JobTag.job_id).where(JobTag.key == key, JobTag.value == value)
        stmt = stmt.where(Job.id.in_(tagged))
    if flt.text and flt.text.strip():
        words = flt.text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Job.name.ilike(f"%{words}%", escape="\\"))
    if flt.created_after:
        stmt = stmt.where(Job.created_at >= flt.created_after)
    if flt.created_before:
        stmt = stmt.where(Job.created_at < flt.created_before)
    return stmt


@dataclass(frozen=True)
class Names:
    """What jobs refer to by id, in words: their projects' slugs and their owners' e-mails."""

    projects: dict[uuid.UUID, str]
    owners: dict[uuid.UUID, str]
    workers: dict[uuid.UUID, str] = field(default_factory=dict)
    targets: dict[uuid.UUID, list[str]] = field(default_factory=dict)  # a targeted job's workers, by job


def names_of(session: Session, jobs: Sequence[Job]) -> Names:
    """The names of the jobs' projects, owners and workers (a query each for a whole page)."""
    owners: dict[uuid.UUID, str] = {}
    wanted = {job.owner_id for job in jobs}
    if wanted:
        owners = {i: e for i, e in session.execute(select(User.id, User.email).where(User.id.in_(wanted)))}
    held = {job.worker_id for job in jobs if job.worker_id is not None}
    workers: dict[uuid.UUID, str] = {}
    if held:
        rows = session.execute(select(Worker.id, Worker.name).where(Worker.id.in_(held)))
        workers = {i: n for i, n in rows}
    named = targets.workers_of(session, [job.id for job in jobs if job.targeted])
    return Names(projects.slugs(session, [job.project_id for job in jobs]), owners, workers, named)


def names_of_submitted(session: Session, user: User, job: Job) -> Names:
    """:func:`names_of` for a job ``user`` has just queued in this session: its project is at hand, its owner
    is the user, no worker holds it yet."""
    project = session.get(Project, job.project_id)
    named = targets.workers_of(session, [job.id]) if job.targeted else {}
    return Names({job.project_id: project.slug if project else ""}, {user.id: user.email}, {}, named)


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
RerunInputs = Literal["original", "current"]


def rerun(
    session: Session,
    settings: Settings,
    apps: registry.AppRegistry,
    user: User,
    job: Job,
    *,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    image: RerunImage = "pinned",
    inputs: RerunInputs = "original",
) -> Job:
    """The same app version, entrypoint, parameters and inputs again, as a new job. Its inputs are the
    exact content the job ran with (even if the files were changed or deleted since) unless ``inputs`` is
    "current": then what their paths hold now. A container job's rerun runs the image its job ran (by
    content id, even if its tag moved since) unless ``image`` is "current": then whatever its reference
    names now."""
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
        workers=targets.workers_of(session, [job.id]).get(job.id, []),
    )
    new = submit(
        session,
        settings,
        apps,
        user,
        sub,
        ceiling=ceiling,
        rerun_of=job.id,
        inputs_of=job if inputs == "original" else None,
    )
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
    details = {"app": job.app, "name": job.name, "owner_id": job.owner_id, "state": job.state}
    audit.record(session, "job.deleted", "job", job.id, details)
    session.delete(job)
    session.flush()
    shutil.rmtree(job_dir(settings, job.id), ignore_errors=True)
