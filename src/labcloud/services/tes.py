"""GA4GH TES 1.1 on labcloud's jobs: a task is a job whose executors run one after the other, each in a
container of its own (:mod:`labcloud.execution.task`), on whichever executor the installation routes app
``tes`` to (its default one unless a route says otherwise): this server's machine, a pull worker, a Slurm
node or a Celery worker.

The job carries what every job has (owner, state and history, resources, tags, log, cancel, retries of a
lost run); the task's own document, its secret inline inputs, the files its outputs delivered and what the
server said of it live beside it (:class:`~labcloud.db.models.TesTask`). This module checks a task,
stores it (and again, for a rerun), maps states both ways and cuts the three views; :mod:`.tes_run`
tells the runners where a task's files come from and go to.

Files: an input's ``url`` and an output's ``url`` name a path in the caller's own file space, written
``labcloud:///path/in/space`` (or ``labcloud://path``, or the plain path), or ``s3://bucket/key`` in the
buckets an admin opened (:mod:`labcloud.services.tes_s3`); an input may also be an ``http(s)://`` URL,
downloaded by the server when the task starts (never by the container), or inline ``content``. Other
schemes (``gs://``, ``file://``, ...) are refused with 400.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from labcloud import __version__
from labcloud.db.models import Job, JobTag, Project, TesTask, User
from labcloud.errors import Forbidden, InvalidInput, LabcloudError, NotFound
from labcloud.execution.task import (
    Step,
    TaskInput,
    TaskLayout,
    TaskOutput,
    has_wildcards,
    inside,
    parent,
)
from labcloud.registry.models import IMAGE_PATTERN, ContainerOptions, EntrypointSpec, Resources
from labcloud.services import files, projects, routing, tes_s3, url_fetch
from labcloud.services import jobs as job_service
from labcloud.services.job_logs import log_path
from labcloud.services.job_states import FailureReason, JobState
from labcloud.services.lifecycle import transition
from labcloud.services.pagination import decode_cursor, paginate
from labcloud.settings import Settings

APP, VERSION, ENTRYPOINT = "tes", "1.1", "task"
TES_VERSION = "1.1.0"
VIEWS = ("MINIMAL", "BASIC", "FULL")
STATES = (
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "CANCELING",
)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 256, 2047
SCHEME = "labcloud:"
IGNORED = "backend parameters not supported and ignored: "  # a task's note, and a rerun's
# The keys of resources.backend_parameters this server takes: the task's time limit, and the labcloud
# project it runs in and answers to (a slug; default the caller's personal project).
BACKEND_PARAMETERS = ("timeout_s", "project")
MAX_EXECUTORS, MAX_FILES, MAX_VOLUMES, MAX_ARGS = 100, 1000, 100, 10_000
LOG_TAIL_BYTES = 64 * 1024  # of each executor's output in the FULL view
# Paths inside a container: plain characters only (they become --mount options), absolute, no '..'.
PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._+@%~=/-]*$")
PATTERN_PATTERN = re.compile(r"^/[A-Za-z0-9._+@%~=/*?\[\]!-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Where nothing of a task may be mounted: the kernel's and devices' file systems, and the sockets under /run
# (the container engine's among them).
FORBIDDEN = ("/proc", "/sys", "/dev", "/run", "/var/run")
EXECUTOR_FAILURES = frozenset({FailureReason.APP_ERROR, FailureReason.TIMEOUT, FailureReason.OUT_OF_MEMORY})


class TaskRefused(LabcloudError):
    status, title, type_slug = 400, "Bad request", "invalid-task"


# --- the task document as it arrives -----------------------------------------------------------------------


class _In(BaseModel):
    # Fields a client sends back from a task it read (id, state, logs, creation_time) are ignored.
    model_config = ConfigDict(extra="ignore")


class InputIn(_In):
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)
    url: str | None = Field(None, max_length=4096)
    path: str = Field(max_length=1024)
    type: Literal["FILE", "DIRECTORY"] | None = None
    content: str | None = None
    streamable: bool | None = None


class OutputIn(_In):
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)
    url: str = Field(max_length=4096)
    path: str = Field(max_length=1024)
    path_prefix: str | None = Field(None, max_length=1024)
    type: Literal["FILE", "DIRECTORY"] | None = None


class ResourcesIn(_In):
    cpu_cores: int | None = Field(None, ge=0, le=1024)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, ge=0, le=16 * 1024)
    disk_gb: float | None = Field(None, ge=0)
    zones: list[str] | None = Field(None, max_length=100)
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class ExecutorIn(_In):
    image: str = Field(max_length=255)
    command: list[str] = Field(max_length=MAX_ARGS)
    workdir: str | None = Field(None, max_length=1024)
    stdin: str | None = Field(None, max_length=1024)
    stdout: str | None = Field(None, max_length=1024)
    stderr: str | None = Field(None, max_length=1024)
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TaskIn(_In):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=100_000)
    inputs: list[InputIn] | None = Field(None, max_length=MAX_FILES)
    outputs: list[OutputIn] | None = Field(None, max_length=MAX_FILES)
    resources: ResourcesIn | None = None
    executors: list[ExecutorIn] = Field(min_length=1, max_length=MAX_EXECUTORS)
    volumes: list[str] | None = Field(None, max_length=MAX_VOLUMES)
    tags: dict[str, str] | None = None


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: list[str | int], msg: str) -> None:
        self.items.append({"loc": ["body", *loc], "msg": msg})

    def raise_any(self) -> None:
        if self.items:
            first = self.items[0]
            where = ".".join(str(p) for p in first["loc"][1:])
            more = f" (and {len(self.items) - 1} more problems)" if len(self.items) > 1 else ""
            raise TaskRefused(f"The task is not valid: {where}: {first['msg']}{more}", errors=self.items)


# --- creating -----------------------------------------------------------------------------------------------


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
    try:
        task = TaskIn.model_validate(body)
    except ValidationError as exc:
        refused = _Errors()
        for problem in exc.errors():
            refused.add(list(problem.get("loc", ())), problem.get("msg", "invalid"))
        refused.raise_any()
        raise
    errors = _Errors()
    for i, ex in enumerate(task.executors):
        _check_executor(errors, settings, i, ex)
    contents = _check_inputs(errors, session, settings, user, task.inputs or [])
    _check_outputs(errors, settings, task.outputs or [])
    for i, volume in enumerate(task.volumes or []):
        _check_path(errors, ["volumes", i], volume)
    tags = dict(task.tags or {})
    try:
        job_service.check_tags(tags)
    except InvalidInput as exc:
        errors.items += exc.errors or []
    resources, notes, strict_refusal = _resources(errors, settings, task.resources, ignored)
    project = _project(errors, session, user, task.resources)
    errors.raise_any()
    layout = _layout(task, settings, inputs=[])
    _check_streams(errors, task, layout)
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
            job_service.within(resources, limits)
        except InvalidInput as exc:
            errors.items += exc.errors or []
    errors.raise_any()
    document = _document(task)
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
            tags=tags,
            executor=where.executor,
            queue=where.queue,
            rerun_of=rerun_of,
            project_id=project.id if project is not None else None,
        ),
    )
    session.add(
        TesTask(job_id=job.id, document=document, contents=contents, outputs_log=[], system_logs=notes)
    )
    session.flush()
    if strict_refusal:
        transition(session, job, JobState.FAILED, reason=FailureReason.REJECTED, message=strict_refusal)
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


def _check_path(errors: _Errors, loc: list[str | int], path: str, *, pattern: bool = False) -> None:
    """A path inside the containers: absolute, plain, no '..', nothing under /proc, /sys, /dev, /run."""
    grammar = PATTERN_PATTERN if pattern else PATH_PATTERN
    parts = path.split("/")
    if not grammar.match(path):
        allowed = "letters, digits and . _ + @ % ~ = - /" + (" * ? [ ] !" if pattern else "")
        errors.add(loc, f"must be an absolute path of {allowed} only")
    elif ".." in parts or "." in parts:
        errors.add(loc, "must not contain '.' or '..' parts")
    elif path.rstrip("/") == "":
        errors.add(loc, "must not be the root folder")
    elif any(inside(path, forbidden) for forbidden in FORBIDDEN):
        errors.add(loc, f"must not lie under {', '.join(FORBIDDEN)}")


def _check_executor(errors: _Errors, settings: Settings, i: int, ex: ExecutorIn) -> None:
    loc: list[str | int] = ["executors", i]
    if not IMAGE_PATTERN.match(ex.image):
        errors.add([*loc, "image"], "not an image reference (e.g. labcloud/busybox:1, repo/tool@sha256:...)")
    elif not any(fnmatch.fnmatchcase(ex.image, pattern) for pattern in settings.tes_allowed_images):
        allowed = ", ".join(settings.tes_allowed_images) or "none"
        errors.add([*loc, "image"], f"image {ex.image!r} is not allowed on this server (allowed: {allowed})")
    if not ex.command:
        errors.add([*loc, "command"], "must name a program to run")
    elif any("\x00" in arg for arg in ex.command):
        errors.add([*loc, "command"], "must not contain a NUL character")
    for name in ("workdir", "stdin", "stdout", "stderr"):
        value = getattr(ex, name)
        if value is not None and value != "":
            _check_path(errors, [*loc, name], value)
    for name, value in (ex.env or {}).items():
        if not ENV_NAME.match(name):
            errors.add([*loc, "env", name], "a variable's name is letters, digits and _ (not first a digit)")
        elif any(c in value for c in "\x00\r\n"):
            errors.add([*loc, "env", name], "a variable's value cannot hold a NUL or a line break here")


def _check_inputs(
    errors: _Errors, session: Session, settings: Settings, user: User, inputs: list[InputIn]
) -> dict[str, str]:
    """Check each input (a file of the caller's space must exist now); the inline contents by index."""
    contents: dict[str, str] = {}
    seen: list[tuple[str, bool]] = []
    for i, item in enumerate(inputs):
        loc: list[str | int] = ["inputs", i]
        _check_path(errors, [*loc, "path"], item.path)
        directory = item.type == "DIRECTORY"
        for other, other_dir in seen:
            if item.path == other or (inside(item.path, other) and not other_dir):
                errors.add([*loc, "path"], f"clashes with the input at {other}")
        seen.append((item.path, directory))
        if item.content is not None and (item.content != "" or not item.url):
            if directory:
                errors.add([*loc, "type"], "inline content makes a FILE")
            elif len(item.content.encode()) > settings.tes_max_content_bytes:
                errors.add([*loc, "content"], f"longer than {settings.tes_max_content_bytes} bytes")
            else:
                contents[str(i)] = item.content
            continue
        if not item.url:
            errors.add([*loc, "url"], "an input needs a url or content")
            continue
        kind, where = _url(item.url)
        if kind == "s3":
            why = tes_s3.refusal(settings, item.url, directory, output=False)
            if why:
                errors.add([*loc, "url"], why)
        elif kind == "http":
            try:
                url_fetch.check_url(item.url)
            except url_fetch.FetchError as exc:
                errors.add([*loc, "url"], str(exc))
            if directory:
                errors.add([*loc, "type"], "an http(s) input is a FILE")
        elif kind == "space":
            try:
                personal = files.Space(projects.personal(session, user).id, user.id)
                entry = files.resolve_input(session, personal, where, [*loc, "url"])
            except InvalidInput as exc:
                errors.items += [{"loc": ["body", *loc, "url"], "msg": e["msg"]} for e in exc.errors or []]
                continue
            if (entry.kind == files.FOLDER) != directory:
                want = "a folder (type DIRECTORY)" if directory else "a file (type FILE)"
                errors.add([*loc, "url"], f"'{entry.path}' is not {want}")
        else:
            errors.add([*loc, "url"], where)
    return contents


def _check_outputs(errors: _Errors, settings: Settings, outputs: list[OutputIn]) -> None:
    for i, out in enumerate(outputs):
        loc: list[str | int] = ["outputs", i]
        pattern = has_wildcards(out.path)
        _check_path(errors, [*loc, "path"], out.path, pattern=pattern)
        if pattern:
            if not out.path_prefix:
                errors.add([*loc, "path_prefix"], "is required when the path holds wildcards")
            else:
                _check_path(errors, [*loc, "path_prefix"], out.path_prefix)
        folder = out.path if out.type == "DIRECTORY" and not pattern else parent(out.path)
        if not pattern and folder.rstrip("/") == "":
            errors.add([*loc, "path"], "an output's folder must not be the root folder")
        kind, where = _url(out.url)
        if kind == "s3":
            why = tes_s3.refusal(settings, out.url, out.type == "DIRECTORY" or pattern, output=True)
            if why:
                errors.add([*loc, "url"], why)
        elif kind != "space":
            errors.add([*loc, "url"], "outputs go to your file space (labcloud:///path) or s3://; " + where)


def _url(url: str) -> tuple[str, str]:
    """("space", path in the caller's space), ("http", url), ("s3", url), or ("refused", why)."""
    lowered = url.lower()
    if lowered.startswith(("http://", "https://")):
        return "http", url
    if lowered.startswith("s3://"):
        return "s3", url
    if lowered.startswith(SCHEME):
        rest = url[len(SCHEME) :]
        rest = rest[2:] if rest.startswith("//") else rest
        return "space", rest.lstrip("/")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url):
        scheme = url.split(":", 1)[0]
        return "refused", f"{scheme}:// URLs are not supported here; use labcloud:///path (your file space)"
    return "space", url.lstrip("/")


def _resources(
    errors: _Errors, settings: Settings, given: ResourcesIn | None, ignored: str = ""
) -> tuple[Resources, list[str], str]:
    """The job's resources; what the server notes about them; why a strict task is refused ("": it is
    not). ``ignored``: the unsupported parameters a rerun's original had (its document has none left)."""
    given = given or ResourcesIn()
    notes: list[str] = []
    timeout = settings.tes_timeout_s
    unsupported = []
    for key, value in (given.backend_parameters or {}).items():
        if key.lower() == "timeout_s":
            if not value.isdigit() or not 1 <= int(value) <= settings.tes_timeout_s:
                errors.add(
                    ["resources", "backend_parameters", key],
                    f"a whole number of seconds from 1 to {settings.tes_timeout_s}",
                )
            else:
                timeout = int(value)
        elif key.lower() != "project":  # (the project is the job's, not a resource: see create)
            unsupported.append(key)
    refusal = ""
    ignored = ", ".join(unsupported) or ignored
    if ignored:
        notes.append(IGNORED + ignored)
        if given.backend_parameters_strict:
            refusal = f"refused: backend parameters not supported here: {ignored}"
    if given.disk_gb:
        notes.append("disk_gb is not enforced here")
    ram_gb = given.ram_gb or settings.tes_default_ram_gb
    resources = Resources(
        cpus=float(given.cpu_cores or 1), memory_mb=max(math.ceil(ram_gb * 1024), 6), timeout_s=timeout
    )
    return resources, notes, refusal


def _project(errors: _Errors, session: Session, user: User, given: ResourcesIn | None) -> Project | None:
    """The project named by the backend parameter ``project`` (where the caller may run jobs), or the
    caller's personal one."""
    slug = next(
        (v for k, v in ((given.backend_parameters or {}) if given else {}).items() if k.lower() == "project"),
        "",
    )
    try:
        return projects.for_submit(session, user, slug or None)
    except InvalidInput as exc:
        errors.add(["resources", "backend_parameters", "project"], exc.detail)
        return None


def _check_streams(errors: _Errors, task: TaskIn, layout: TaskLayout) -> None:
    """An executor's stdin must lie where a task's files are (an input, a volume, an output's folder)."""
    mounts = layout.mounts()
    for i, ex in enumerate(task.executors):
        if ex.stdin and not any(inside(ex.stdin, m.path) for m in mounts):
            errors.add(
                ["executors", i, "stdin"], "must be an input's path or lie in a volume or input folder"
            )
        for name in ("stdout", "stderr"):
            value = getattr(ex, name)
            if value and parent(value) == "/":
                errors.add(["executors", i, name], "must lie in a folder, not in the root folder")


def _document(task: TaskIn) -> dict[str, Any]:
    """The task as stored and shown: what was given, without inline content and unsupported parameters,
    with every input's and output's type."""
    doc = task.model_dump(mode="json", exclude_none=True)
    for item in doc.get("inputs", []):
        item.pop("content", None)
        item.setdefault("type", "FILE")
    for item in doc.get("outputs", []):
        item.setdefault("type", "FILE")
    params = doc.get("resources", {}).get("backend_parameters")
    if params is not None:
        doc["resources"]["backend_parameters"] = {
            k: v for k, v in params.items() if k.lower() in BACKEND_PARAMETERS
        }
    return doc


def _layout(task: TaskIn, settings: Settings, inputs: list[TaskInput]) -> TaskLayout:
    steps = [
        Step(
            image=ex.image,
            command=list(ex.command),
            workdir=ex.workdir or "",
            env=dict(ex.env or {}),
            stdin=ex.stdin or "",
            stdout=ex.stdout or "",
            stderr=ex.stderr or "",
            ignore_error=bool(ex.ignore_error),
        )
        for ex in task.executors
    ]
    outputs = [
        TaskOutput(out.path, out.type == "DIRECTORY", out.path_prefix or "") for out in task.outputs or []
    ]
    return TaskLayout(
        steps=steps,
        inputs=inputs,
        outputs=outputs,
        volumes=list(task.volumes or []),
        user=settings.tes_user,
        network=settings.tes_network,
    )


# --- reading ------------------------------------------------------------------------------------------------


def get(session: Session, user: User, task_id: str) -> tuple[Job, TesTask]:
    """The caller's task; another user's (or none) is 404."""
    try:
        job_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"You have no task with id {task_id[:100]!r}.") from None
    row = session.get(TesTask, job_id)
    job = session.get(Job, job_id) if row is not None else None
    if row is None or job is None or job.owner_id != user.id:
        raise NotFound(f"You have no task with id {task_id}.")
    return job, row


@dataclass
class TaskFilter:
    name_prefix: str = ""
    state: str = ""
    tags: list[tuple[str, str]] | None = None


def list_tasks(
    session: Session, user: User, flt: TaskFilter, page_size: int, page_token: str | None
) -> tuple[list[tuple[Job, TesTask]], str | None]:
    """One page of the caller's tasks, newest first."""
    stmt: Select[Any] = select(Job).join(TesTask, TesTask.job_id == Job.id).where(Job.owner_id == user.id)
    if flt.name_prefix:
        escaped = flt.name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Job.name.like(escaped + "%", escape="\\"))
    if flt.state:
        stmt = stmt.where(_state_condition(flt.state))
    for key, value in flt.tags or []:
        tagged = select(JobTag.job_id).where(JobTag.key == key)
        if value:
            tagged = tagged.where(JobTag.value == value)
        stmt = stmt.where(Job.id.in_(tagged))
    if page_token:
        try:
            decode_cursor(page_token)
        except InvalidInput:
            raise TaskRefused("page_token is not one this server gave out.") from None
    page = paginate(session, stmt, Job.id, limit=page_size, cursor=page_token, newest_first=True)
    ids = [job.id for job in page.items]
    rows = {row.job_id: row for row in session.scalars(select(TesTask).where(TesTask.job_id.in_(ids)))}
    return [(job, rows[job.id]) for job in page.items], page.next_cursor


def _state_condition(state: str) -> Any:
    """The jobs in a TES state (none for the states labcloud never has: UNKNOWN, PAUSED, PREEMPTED)."""
    simple = {
        "QUEUED": [JobState.QUEUED],
        "INITIALIZING": [JobState.STAGING],
        "RUNNING": [JobState.RUNNING, JobState.FINISHING],
        "COMPLETE": [JobState.SUCCEEDED],
        "CANCELING": [JobState.CANCELLING],
        "CANCELED": [JobState.CANCELLED],
    }
    if state in simple:
        return Job.state.in_(simple[state])
    failed = Job.state == JobState.FAILED
    if state == "EXECUTOR_ERROR":
        return failed & Job.reason.in_(list(EXECUTOR_FAILURES))
    if state == "SYSTEM_ERROR":
        return failed & Job.reason.not_in(list(EXECUTOR_FAILURES))
    return Job.id.is_(None)


def tes_state(job: Job) -> str:
    """The TES state of a job."""
    state = JobState(job.state)
    if state == JobState.FAILED:
        return "EXECUTOR_ERROR" if job.reason in EXECUTOR_FAILURES else "SYSTEM_ERROR"
    return {
        JobState.QUEUED: "QUEUED",
        JobState.STAGING: "INITIALIZING",
        JobState.RUNNING: "RUNNING",
        JobState.FINISHING: "RUNNING",
        JobState.SUCCEEDED: "COMPLETE",
        JobState.CANCELLING: "CANCELING",
        JobState.CANCELLED: "CANCELED",
    }[state]


def view(settings: Settings, job: Job, row: TesTask, which: str) -> dict[str, Any]:
    """The task in one of the three views: MINIMAL (id and state), BASIC (all but the executors' output,
    inline content and system logs), FULL (all; inline content is never shown back)."""
    out: dict[str, Any] = {"id": str(job.id), "state": tes_state(job)}
    if which == "MINIMAL":
        return out
    out |= row.document
    out["creation_time"] = rfc3339(job.created_at)
    out["logs"] = _logs(settings, job, row, full=which == "FULL")
    return out


def _logs(settings: Settings, job: Job, row: TesTask, full: bool) -> list[dict[str, Any]]:
    if job.attempts == 0 and job.state == JobState.QUEUED:
        return []
    entry: dict[str, Any] = {
        "logs": [_executor_log(settings, job, step, full) for step in job.steps or []],
        "outputs": list(row.outputs_log),
        "metadata": {"attempt": str(job.attempts), "labcloud_state": str(job.state)},
    }
    if job.reason:
        entry["metadata"]["labcloud_reason"] = str(job.reason)
    if job.started_at:
        entry["start_time"] = rfc3339(job.started_at)
    if job.finished_at:
        entry["end_time"] = rfc3339(job.finished_at)
    if full:
        system = list(row.system_logs)
        if job.message and job.state in (JobState.FAILED, JobState.CANCELLED):
            system.append(job.message)
        entry["system_logs"] = system
    return [entry]


def _executor_log(settings: Settings, job: Job, step: dict[str, Any], full: bool) -> dict[str, Any]:
    code = step.get("exit_code")
    out: dict[str, Any] = {"exit_code": int(code) if isinstance(code, int) else -1}
    for key, field in (("started_at", "start_time"), ("finished_at", "end_time")):
        if isinstance(step.get(key), int | float):
            out[field] = rfc3339(datetime.fromtimestamp(step[key], UTC))
    if full:
        out["stdout"] = _log_slice(settings, job.id, step.get("log_start"), step.get("log_end"))
        out["stderr"] = ""
    return out


def _log_slice(settings: Settings, job_id: uuid.UUID, start: Any, end: Any) -> str:
    """The end of one executor's stretch of the job's log (its stdout and stderr together)."""
    if not isinstance(start, int) or not isinstance(end, int) or end <= start:
        return ""
    start = max(start, end - LOG_TAIL_BYTES)
    try:
        with open(log_path(settings, job_id), "rb") as fh:
            fh.seek(start)
            return fh.read(end - start).decode("utf-8", errors="replace")
    except OSError:
        return ""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def service_info(settings: Settings) -> dict[str, Any]:
    return {
        "id": "dev.labcloud.tes",
        "name": "labcloud",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION},
        "description": "GA4GH TES on labcloud: a task is a job, its executors run in containers.",
        "organization": {"name": "labcloud", "url": settings.public_url},
        "documentationUrl": f"{settings.public_url}/docs",
        "version": __version__,
        "storage": [f"{SCHEME}///", "http://", "https://", *(f"s3://{b}" for b in settings.tes_s3_buckets)],
        "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
    }
