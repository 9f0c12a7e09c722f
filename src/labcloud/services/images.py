"""The container images of an app on this server's engine: which of them the engine has (and which live
workers' engines, from their heartbeats), and pulling them.

For admins: a job of a container app runs only an image its engine already holds (``--pull=never``), so an
image is pulled ahead, here. The caller gives the engine (or why there is none); nothing here knows HTTP or
settings. What an engine says is passed on as its words, with the auth file's name and secrets taken out
(:meth:`Engine.redact`): a pull that fails is a result, not an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from labcloud.db.models import Worker
from labcloud.execution.containers import Engine, ImageUnavailable
from labcloud.registry.models import AppSpec
from labcloud.services.claims import image_key

log = logging.getLogger("labcloud.images")

CONTENT_ID = re.compile(r"sha256:[0-9a-f]{64}")
APPTAINER_NOTE = "Apptainer fetches an image when a job runs it; labcloud does not look for it beforehand"


@dataclass(frozen=True)
class ImageUse:
    """An entrypoint of one version that runs ``image``."""

    version: str
    entrypoint: str
    image: str


@dataclass(frozen=True)
class EngineImage:
    """What this server's engine holds of one image."""

    kind: str | None  # docker, podman, apptainer; None without an engine
    present: bool
    id: str | None  # sha256:... when present
    problem: str | None  # why not present (the engine's words), or why there is no engine


@dataclass(frozen=True)
class WorkerEngine:
    """What a worker's last heartbeat said of its engine's images."""

    name: str
    kind: str
    images: list[str]  # repository:tag
    image_ids: dict[str, str]  # reference (repository:tag, repository@sha256:...) → content id


@dataclass(frozen=True)
class WorkerImage:
    """Whether a live worker's engine holds one image (a job of it can run there)."""

    name: str
    kind: str
    present: bool
    id: str | None  # its content id there, when the worker reported it


@dataclass(frozen=True)
class ImageState:
    version: str
    entrypoint: str
    image: str
    engine: EngineImage
    workers: list[WorkerImage] = field(default_factory=list)


@dataclass(frozen=True)
class PullResult:
    image: str
    ok: bool
    id: str | None
    message: str


def image_uses(app: AppSpec, version: str | None = None) -> list[ImageUse]:
    """The container entrypoints of ``version`` (of every version, newest first, when None)."""
    versions = [version] if version is not None else app.sorted_versions()
    return [
        ImageUse(name, entrypoint, spec.image)
        for name in versions
        for entrypoint, spec in app.versions[name].entrypoints.items()
        if spec.runtime == "container" and spec.image is not None
    ]


def image_states(
    app: AppSpec, engine: Engine | None, problem: str, workers: Sequence[WorkerEngine] = ()
) -> list[ImageState]:
    """Every container entrypoint of ``app`` with what the engine holds of its image (asked once an image),
    and which of ``workers`` (live ones, with an engine) hold it."""
    known: dict[str, EngineImage] = {}
    states = []
    for use in image_uses(app):
        if use.image not in known:
            known[use.image] = _look(use.image, engine, problem)
        on_workers = [on_worker(use.image, worker) for worker in workers]
        states.append(ImageState(use.version, use.entrypoint, use.image, known[use.image], on_workers))
    return states


def worker_engines(workers: Iterable[Worker]) -> list[WorkerEngine]:
    """The engines these workers' last heartbeats reported."""
    return [
        WorkerEngine(
            worker.name,
            str(engine.get("kind")),
            [str(ref) for ref in engine.get("images") or []],
            {str(ref): str(found) for ref, found in (engine.get("image_ids") or {}).items()},
        )
        for worker in workers
        for engine in worker.engines or []
    ]


def on_worker(image: str, worker: WorkerEngine) -> WorkerImage:
    """Whether ``worker`` holds ``image``: by reference as engines list them (repository:tag, or
    repository@sha256:... for an image pinned by digest), or by content id for one named by it."""
    wanted = image_key(image)
    ids = {image_key(ref): found for ref, found in worker.image_ids.items()}
    if wanted in ids:
        return WorkerImage(worker.name, worker.kind, True, ids[wanted])
    if wanted in {image_key(ref) for ref in worker.images}:
        return WorkerImage(worker.name, worker.kind, True, None)
    if CONTENT_ID.fullmatch(image) and image in ids.values():
        return WorkerImage(worker.name, worker.kind, True, image)
    return WorkerImage(worker.name, worker.kind, False, None)


def _look(image: str, engine: Engine | None, problem: str) -> EngineImage:
    if engine is None:
        return EngineImage(None, False, None, problem or "no container engine")
    if engine.kind == "apptainer":
        return EngineImage(engine.kind, False, None, APPTAINER_NOTE)
    try:
        found = engine.image_id(image)
    except ImageUnavailable as exc:
        return EngineImage(engine.kind, False, None, engine.redact(str(exc)))
    return EngineImage(engine.kind, True, found, None)


def pull_images(
    app: AppSpec, version: str, engine: Engine | None, problem: str, timeout_s: float, by: str
) -> list[PullResult]:
    """Pull every image of ``version`` (each once, one after the other) on ``engine``; a result each.
    Slow (a pull may take minutes): call it outside the event loop and without a database session."""
    images = list(dict.fromkeys(use.image for use in image_uses(app, version)))
    results = [_pull(image, engine, problem, timeout_s) for image in images]
    for result in results:
        log.info(
            "%s pulled image %s of app %s %s: %s",
            by,
            result.image,
            app.name,
            version,
            result.id if result.ok else f"failed: {result.message}",
        )
    return results


def _pull(image: str, engine: Engine | None, problem: str, timeout_s: float) -> PullResult:
    if engine is None:
        return PullResult(image, False, None, f"no container engine here: {problem or 'none answers'}")
    try:
        found = engine.pull(image, timeout=timeout_s)
    except ImageUnavailable as exc:
        return PullResult(image, False, None, engine.redact(str(exc)))
    return PullResult(image, True, found, f"{engine.kind} has {image}")
