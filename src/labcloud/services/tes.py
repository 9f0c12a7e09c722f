"""GA4GH TES 1.1 on labcloud's jobs: a task is a job whose executors run one after the other, each in a
container of its own (:mod:`labcloud.execution.task`), on whichever executor the installation routes app
``tes`` to (its default one unless a route says otherwise): this server's machine, a pull worker, a Slurm
node or a Celery worker.

The job carries what every job has (owner, state and history, resources, tags, log, cancel, retries of a
lost run); the task's own document, its secret inline inputs, the files its outputs delivered and what the
server said of it live beside it (:class:`~labcloud.db.models.TesTask`). :mod:`.tes_document` checks a
task, this module stores it (and again, for a rerun), :mod:`.tes_views` maps states both ways and cuts
the three views; :mod:`.tes_run` tells the runners where a task's files come from and go to.

Files: an input's ``url`` and an output's ``url`` name a path in the caller's own file space, written
``labcloud:///path/in/space`` (or ``labcloud://path``, or the plain path), or ``s3://bucket/key`` in the
buckets an admin opened (:mod:`labcloud.services.tes_s3`); an input may also be an ``http(s)://`` URL,
downloaded by the server when the task starts (never by the container), or inline ``content``. Other
schemes (``gs://``, ``file://``, ...) are refused with 400.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from labcloud.db.models import Job, TesTask, User
from labcloud.errors import Forbidden, InvalidInput, NotFound
from labcloud.registry.entrypoint import EntrypointSpec
from labcloud.registry.spec_parts import ContainerOptions
from labcloud.services import job_checks, routing, tes_document, tes_task_in
from labcloud.services import jobs as job_service
from labcloud.services.job_states import FailureReason, JobState
from labcloud.services.lifecycle import transition
from labcloud.services.tes_document import IGNORED, TaskRefused
from labcloud.settings import Settings

APP, VERSION, ENTRYPOINT = "tes", "1.1", "task"


def create(
    session: Session,
    settings: Settings,
    user: User,
    body: Any,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
    *,
    rerun_of: uuid.UUID | None = None,
    ignored: str = "",
) -> Job:
    """Check a task document (every problem at once, 400) and queue it as a job of ``user``, for the
    executor the installation's routes give app ``tes`` (else its default one). ``ceiling``: the most an
    executor (by name) can ever give a job; more is refused. A rerun (:func:`rerun`) says which task it
    repeats and which backend parameters that one's creation ignored."""
    checked = tes_document.check(session, settings, user, body, ignored)
    task, resources, errors = checked.task, checked.resources, checked.errors
    first = task.executors[0]
    spec = EntrypointSpec(
        description="a GA4GH TES task",
        runtime="container",
        image=first.image,
        container=ContainerOptions(user=settings.tes_user),
        command=first.command,
        resources=resources,
        network=settings.tes_network != "none",
    )
    try:
        where = routing.route(settings, APP, ENTRYPOINT, spec, resources)
    except InvalidInput as exc:
        raise TaskRefused(exc.detail) from None
    limits = ceiling(where.executor) if ceiling else None
    if limits:
        try:
            job_checks.within(resources, limits)
        except InvalidInput as exc:
            errors.items += exc.errors or []
    errors.raise_any()
    document = tes_task_in.document(task)
    job = job_service.queue(
        session,
        settings,
        user,
        Job(
            name=(task.name or "").strip()[:200],
            app=APP,
            version=VERSION,
            entrypoint=ENTRYPOINT,
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.spec_hash(),
            params={},
            inputs={},
            env={},
            resources=resources,
            tags=checked.tags,
            executor=where.executor,
            queue=where.queue,
            rerun_of=rerun_of,
            project_id=checked.project.id if checked.project is not None else None,
        ),
    )
    session.add(
        TesTask(
            job_id=job.id,
            document=document,
            contents=checked.contents,
            outputs_log=[],
            system_logs=checked.notes,
        )
    )
    session.flush()
    if checked.strict_refusal:
        transition(
            session, job, JobState.FAILED, reason=FailureReason.REJECTED, message=checked.strict_refusal
        )
    return job


def rerun(
    session: Session,
    settings: Settings,
    user: User,
    job: Job,
    ceiling: Callable[[str], dict[str, float] | None] | None = None,
) -> Job:
    """The same task again, as a new one (``rerun_of`` the old): its stored document with its inline
    contents, checked and routed as a new task is today (an image no longer allowed or an input file gone
    refuse it, 400), refused again if it was for its unsupported strict parameters. Only its owner may:
    the contents are theirs, and the task's urls name a path in the caller's space."""
    row = session.get(TesTask, job.id)
    if row is None:
        raise NotFound(f"Job {job.id} is not a GA4GH TES task.")
    if job.owner_id != user.id:
        raise Forbidden("Only its owner can run a task again: its inline inputs and files are theirs.")
    body = copy.deepcopy(row.document)
    for index, content in row.contents.items():
        body["inputs"][int(index)]["content"] = content
    ignored = next((n.removeprefix(IGNORED) for n in row.system_logs if n.startswith(IGNORED)), "")
    try:
        return create(session, settings, user, body, ceiling, rerun_of=job.id, ignored=ignored)
    except TaskRefused as exc:
        raise TaskRefused(f"Task {job.id} cannot run again. {exc.detail}", errors=exc.errors) from None
