"""What submitting, listing and waiting for jobs need, written once for the sync and the async client (and
the command line): the submission body, which local inputs to upload first, the listing's query, and
waiting as steps (:mod:`labcloud.client.steps`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from labcloud.client.errors import ClientError
from labcloud.client.models import TERMINAL_STATES
from labcloud.client.steps import FetchJob, Pause

if TYPE_CHECKING:
    from labcloud.client.progress import ShowProgress

InputValue = str | PathLike[str]
JobUpdate = Callable[[dict[str, Any]], None]  # called with the job each time it is read while waiting
NETWORK_FAILURES = 10  # failed reads in a row (the server restarting, say) before waiting gives up


class SubmitOptions(TypedDict, total=False):
    """What a job is submitted with besides its app (see :meth:`labcloud.client.Jobs.submit`)."""

    params: Mapping[str, Any] | None
    inputs: Mapping[str, InputValue] | None
    version: str | None
    entrypoint: str | None
    name: str
    tags: Mapping[str, str] | None
    resources: Mapping[str, float] | None
    env: Mapping[str, str] | None
    project: str | None
    wait: bool
    timeout: float | None
    progress: ShowProgress


class JobFilters(TypedDict, total=False):
    """Which jobs a listing yields (see :meth:`labcloud.client.Jobs.list`), and how many are read at once."""

    state: str | Iterable[str] | None
    app: str | None
    tag: Mapping[str, str] | Iterable[str] | None
    created_after: datetime | None
    created_before: datetime | None
    project: str | None
    page_size: int


def parse_app_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``APP[:VERSION[:ENTRYPOINT]]``; an empty part means the default (``hello::greet``)."""
    parts = ref.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"'{ref}' is not APP[:VERSION[:ENTRYPOINT]]")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1] or None, parts[2] or None


def input_plan(inputs: Mapping[str, InputValue]) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    """The inputs as the API takes them (slot → path in your space) and the local files to upload first.

    A :class:`~pathlib.Path` (any path-like object) is a local file: it is uploaded to ``inputs/NAME``
    (``inputs/SLOT/NAME`` when two different files share a name). A string is a path in your space."""
    paths: dict[str, str] = {}
    plan: dict[str, Path] = {}  # remote path → local file
    for slot, value in inputs.items():
        if isinstance(value, str):
            paths[slot] = value
            continue
        local = Path(value).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"input {slot}: {local} is not a file")
        remote = f"inputs/{local.name}"
        if remote in plan and plan[remote].resolve() != local.resolve():
            remote = f"inputs/{slot}/{local.name}"  # two different files of the same name
        plan[remote] = local
        paths[slot] = remote
    return paths, [(local, remote) for remote, local in plan.items()]


def submission(
    app: str,
    *,
    version: str | None,
    entrypoint: str | None,
    params: Mapping[str, Any] | None,
    inputs: Mapping[str, str],
    name: str,
    tags: Mapping[str, str] | None,
    resources: Mapping[str, float] | None,
    env: Mapping[str, str] | None,
    project: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /jobs``; ``app`` may be ``APP[:VERSION[:ENTRYPOINT]]``, ``project`` a project's
    slug (None: the server's default, your personal project)."""
    name_of_app, ref_version, ref_entrypoint = parse_app_ref(app)
    body: dict[str, Any] = {
        "app": name_of_app,
        "version": version or ref_version,
        "entrypoint": entrypoint or ref_entrypoint,
        "params": dict(params or {}),
        "inputs": dict(inputs),
        "name": name,
        "tags": dict(tags or {}),
    }
    if resources:
        body["resources"] = dict(resources)
    if env:
        body["env"] = dict(env)
    if project:
        body["project"] = project
    return body


def submission_of(app: str, inputs: Mapping[str, str], options: SubmitOptions) -> dict[str, Any]:
    """The body of ``POST /jobs`` for :meth:`labcloud.client.Jobs.submit`, its inputs already paths of your
    space."""
    return submission(
        app,
        version=options.get("version"),
        entrypoint=options.get("entrypoint"),
        params=options.get("params"),
        inputs=inputs,
        name=options.get("name", ""),
        tags=options.get("tags"),
        resources=options.get("resources"),
        env=options.get("env"),
        project=options.get("project"),
    )


def filters_query(filters: JobFilters) -> tuple[dict[str, Any], int]:
    """The query of ``GET /jobs`` for :meth:`labcloud.client.Jobs.list`, and the page size."""
    query = list_query(
        filters.get("state"),
        filters.get("app"),
        filters.get("tag"),
        filters.get("created_after"),
        filters.get("created_before"),
        filters.get("project"),
    )
    return query, filters.get("page_size", 200)


def list_query(
    state: str | Iterable[str] | None = None,
    app: str | None = None,
    tag: Mapping[str, str] | Iterable[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    project: str | None = None,
) -> dict[str, Any]:
    """The query of ``GET /jobs``: ``state`` one or several, ``tag`` a mapping or ``key=value`` strings,
    ``project`` a project's slug (its jobs, everyone's, instead of yours)."""
    query: dict[str, Any] = {}
    if project:
        query["project"] = project
    if state:
        query["state"] = [state] if isinstance(state, str) else list(state)
    if app:
        query["app"] = app
    if isinstance(tag, Mapping):
        query["tag"] = [f"{k}={v}" for k, v in tag.items()]
    elif tag:
        query["tag"] = [tag] if isinstance(tag, str) else list(tag)
    for key, moment in (("created_after", created_after), ("created_before", created_before)):
        if moment is not None:
            query[key] = moment.isoformat()
    return query


def waiting(
    job: dict[str, Any], timeout: float | None = None, on_update: JobUpdate | None = None, poll: float = 2.0
) -> Generator[Pause | FetchJob, Any, dict[str, Any]]:
    """Read the job again and again, more slowly as time goes by (up to every ``poll`` seconds), until it
    has ended or ``timeout`` seconds have passed; returns the last job read (ended, unless the time was
    up). A few network failures in a row (the server restarting) are waited out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay, failures = 0.25, 0
    while job["state"] not in TERMINAL_STATES:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return job
        yield Pause(delay if left is None else min(delay, left))
        delay = min(poll, delay * 1.5)
        try:
            job = yield FetchJob(str(job["id"]))
        except ClientError as exc:
            if exc.status != 0 or failures >= NETWORK_FAILURES:
                raise
            failures += 1
            continue
        failures = 0
        if on_update is not None:
            on_update(job)
    return job
