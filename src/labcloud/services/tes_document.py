"""A GA4GH TES task document's checks: every problem found at once (400, :class:`TaskRefused`), and the
layout its runner gets (:func:`task_layout`). The document's models and what of it is stored and shown are
:mod:`.tes_task_in`. :mod:`.tes` stores a checked task as a job; :mod:`.tes_run` and :mod:`.tes_views`
read the stored document back through those models.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from labcloud.db.models import Project, User
from labcloud.errors import InvalidInput, LabcloudError
from labcloud.execution.task import Step, TaskInput, TaskLayout, TaskOutput, has_wildcards, inside, parent
from labcloud.registry.spec_parts import IMAGE_PATTERN, Resources
from labcloud.services import files, job_checks, job_files, projects, tes_s3, url_fetch
from labcloud.services.tes_task_in import ExecutorIn, InputIn, OutputIn, ResourcesIn, TaskIn
from labcloud.settings import Settings

SCHEME = "labcloud:"


IGNORED = "backend parameters not supported and ignored: "  # a task's note, and a rerun's


# Paths inside a container: plain characters only (they become --mount options), absolute, no '..'.
PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._+@%~=/-]*$")


PATTERN_PATTERN = re.compile(r"^/[A-Za-z0-9._+@%~=/*?\[\]!-]*$")


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Where nothing of a task may be mounted: the kernel's and devices' file systems, and the sockets under /run
# (the container engine's among them).
FORBIDDEN = ("/proc", "/sys", "/dev", "/run", "/var/run")


class TaskRefused(LabcloudError):
    status, title, type_slug = 400, "Bad request", "invalid-task"


class Errors:
    """The problems found in a task document, all reported at once (400)."""

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


# --- checking ---------------------------------------------------------------------------------------------


@dataclass
class Checked:
    """A task document that passed every check of its own; ``errors`` stays open for the problems routing
    it finds (raised with :meth:`Errors.raise_any`)."""

    task: TaskIn
    contents: dict[str, str]  # the inline inputs' contents, by the input's index
    tags: dict[str, str]
    resources: Resources
    notes: list[str]  # what the server says of the task (system_logs)
    strict_refusal: str  # why a strict task is refused ("": it is not)
    project: Project | None
    errors: Errors


def check(session: Session, settings: Settings, user: User, body: Any, ignored: str = "") -> Checked:
    """Check a task document of ``user``: every problem at once (400). ``ignored``: the unsupported backend
    parameters a rerun's original had (its stored document has none left)."""
    try:
        task = TaskIn.model_validate(body)
    except ValidationError as exc:
        refused = Errors()
        for problem in exc.errors():
            refused.add(list(problem.get("loc", ())), problem.get("msg", "invalid"))
        refused.raise_any()
        raise
    errors = Errors()
    for i, ex in enumerate(task.executors):
        _check_executor(errors, settings, i, ex)
    contents = _check_inputs(errors, session, settings, user, task.inputs or [])
    _check_outputs(errors, settings, task.outputs or [])
    for i, volume in enumerate(task.volumes or []):
        _check_path(errors, ["volumes", i], volume)
    tags = dict(task.tags or {})
    try:
        job_checks.check_tags(tags)
    except InvalidInput as exc:
        errors.items += exc.errors or []
    resources, notes, strict_refusal = _resources(errors, settings, task.resources, ignored)
    project = _project(errors, session, user, task.resources)
    errors.raise_any()
    _check_streams(errors, task, task_layout(task, settings, inputs=[]))
    return Checked(task, contents, tags, resources, notes, strict_refusal, project, errors)


def _check_path(errors: Errors, loc: list[str | int], path: str, *, pattern: bool = False) -> None:
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


def _check_executor(errors: Errors, settings: Settings, i: int, ex: ExecutorIn) -> None:
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
    errors: Errors, session: Session, settings: Settings, user: User, inputs: list[InputIn]
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
        kind, where = url_kind(item.url)
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
                entry = job_files.resolve_input(session, personal, where, [*loc, "url"])
            except InvalidInput as exc:
                errors.items += [{"loc": ["body", *loc, "url"], "msg": e["msg"]} for e in exc.errors or []]
                continue
            if (entry.kind == files.FOLDER) != directory:
                want = "a folder (type DIRECTORY)" if directory else "a file (type FILE)"
                errors.add([*loc, "url"], f"'{entry.path}' is not {want}")
        else:
            errors.add([*loc, "url"], where)
    return contents


def _check_outputs(errors: Errors, settings: Settings, outputs: list[OutputIn]) -> None:
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
        kind, where = url_kind(out.url)
        if kind == "s3":
            why = tes_s3.refusal(settings, out.url, out.type == "DIRECTORY" or pattern, output=True)
            if why:
                errors.add([*loc, "url"], why)
        elif kind != "space":
            errors.add([*loc, "url"], "outputs go to your file space (labcloud:///path) or s3://; " + where)


def url_kind(url: str) -> tuple[str, str]:
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
    errors: Errors, settings: Settings, given: ResourcesIn | None, ignored: str = ""
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


def _project(errors: Errors, session: Session, user: User, given: ResourcesIn | None) -> Project | None:
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


def _check_streams(errors: Errors, task: TaskIn, layout: TaskLayout) -> None:
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


def task_layout(task: TaskIn, settings: Settings, inputs: list[TaskInput]) -> TaskLayout:
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
