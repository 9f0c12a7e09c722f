"""What remote workers call (docs/worker-protocol.md): heartbeat and claim with the worker token; start,
log, progress, outputs and finish with the job token that came with the claim."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from labcloud.api.deps import Ctx, bearer_credential, oauth2_scheme
from labcloud.api.downloads import send_file
from labcloud.api.guard import GuardedRoute, gate, read_body
from labcloud.api.job_schemas import ResourcesOut
from labcloud.api.openapi import binary, file_download_responses, problems
from labcloud.db.models import Job
from labcloud.errors import InvalidInput, NotFound, Unauthorized
from labcloud.execution.engine_options import MAX_ENGINES, MAX_IMAGES, MAX_PROBLEM, MAX_REFERENCE
from labcloud.execution.run_end import RunEnd
from labcloud.runtime import Runtime
from labcloud.services import (
    claims,
    executor_refs,
    file_store,
    files,
    handover,
    job_logs,
    job_tokens,
    lifecycle,
    tes_run,
    workers,
)
from labcloud.services.job_states import JobState

router = APIRouter(prefix="/api/v1/worker", tags=["worker protocol"], route_class=GuardedRoute)
MAX_WAIT_S = 30.0
RECHECK_S = 5.0  # a waiting claim also looks again this often (jobs re-queued elsewhere)
CHUNK = 1 << 20


def _worker_gate(request: Request, ctx: Runtime) -> None:
    """Before a body is read: a worker token, or the job token of the job in the path."""
    credential = bearer_credential(request)
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    with ctx.db.sessions() as session:  # a look only: nothing is written, nothing committed
        if credential.startswith(job_tokens.JOB_TOKEN_PREFIX):
            job_id = _path_job_id(request)
            if job_id is None:
                raise Unauthorized("This needs a worker token (lcw_...).")
            job_tokens.held_job(session, ctx.settings, credential, job_id)
        else:
            workers.authenticate(session, credential)


def _path_job_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(request.path_params["job_id"]))
    except (KeyError, ValueError):
        return None


@gate(_worker_gate)
async def _credential(credential: Annotated[str | None, Depends(oauth2_scheme)]) -> str:
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    return credential


Credential = Annotated[str, Depends(_credential)]


class Resources(BaseModel):
    cpus: float = Field(0, ge=0)
    memory_mb: float = Field(0, ge=0)
    gpus: float = Field(0, ge=0)


class HeldJob(BaseModel):
    id: uuid.UUID
    attempt: int


ImageReference = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REFERENCE, pattern=r"^\S+$")]
ImageId = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]


class EngineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["docker", "podman", "apptainer"]
    images: list[ImageReference] = Field(
        default_factory=list, max_length=MAX_IMAGES, description="its local images (repository:tag)"
    )
    image_ids: dict[ImageReference, ImageId] = Field(
        default_factory=dict,
        max_length=2 * MAX_IMAGES,
        description="each local image's content id, by reference (repository:tag, and repository@sha256:..."
        " where the engine knows the registry digest)",
    )


class HeartbeatIn(BaseModel):
    capacity: Resources = Field(default_factory=Resources)
    free: Resources = Field(default_factory=Resources)
    labels: dict[str, str] = Field(default_factory=dict)
    telemetry: dict[str, Any] = Field(default_factory=dict)
    jobs: list[HeldJob] = Field(default_factory=list, max_length=10_000)
    version: str = Field("", max_length=64)
    engines: list[EngineIn] = Field(
        default_factory=list,
        max_length=MAX_ENGINES,
        description="the container engines that run its container jobs",
    )
    engine_problem: str = Field("", max_length=MAX_PROBLEM, description="why it has no engine")


class AttemptsIn(BaseModel):
    attempts: list[HeldJob] = Field(max_length=1000, description="attempts whose containers an engine holds")


class AttemptsOut(BaseModel):
    active: list[HeldJob] = Field(description="those that are their job's current attempt, still running")


class HeartbeatOut(BaseModel):
    state: str
    lease_seconds: int
    heartbeat_interval_s: float
    cancel: list[uuid.UUID]
    abort: list[uuid.UUID]


class ClaimIn(BaseModel):
    free: Resources
    labels: dict[str, str] = Field(default_factory=dict)
    wait_s: float = Field(20.0, ge=0, le=MAX_WAIT_S)


class StepEnd(BaseModel):
    """How one executor of a task went; its log stretch in bytes from the start of this attempt's log."""

    model_config = ConfigDict(extra="ignore")

    exit_code: int | None = None
    started_at: float | None = Field(None, ge=0)
    finished_at: float | None = Field(None, ge=0)
    log_start: int | None = Field(None, ge=0)
    log_end: int | None = Field(None, ge=0)


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal[
        "exited",
        "timeout",
        "out_of_memory",
        "start_failed",
        "cancelled",
        "staging_failed",
        "image_unavailable",
        "lost",
    ]
    exit_code: int | None = None
    message: str = Field("", max_length=4000)
    usage: dict[str, float] = Field(default_factory=dict)
    problem: str | None = Field(
        None, max_length=4000, description="the run ended but its outputs could not all be kept"
    )
    note: str | None = Field(
        None, max_length=4000, description="outputs not kept on purpose (links, fifos...), for the message"
    )
    image: str | None = Field(
        None,
        max_length=300,
        pattern=r"^sha256:[0-9a-f]{64}$|^\S+$",
        description="the container image's content id",
    )
    steps: list[StepEnd] | None = Field(
        None, max_length=100, description="a task's executors: each one's exit code, times and log stretch"
    )


class ProgressIn(BaseModel):
    fraction: float = Field(ge=0, le=1)


class AssignedFile(BaseModel):
    path: str = Field(description="Its path below the input (the input's own name for a file).")
    size: int | None = Field(description="Its size (unknown for a task's downloads).")
    sha256: str | None
    url: str = Field(description="Where its bytes are: a presigned URL, or this API's (with the job token).")


class AssignedInput(BaseModel):
    name: str
    files: list[AssignedFile]


class AssignedStep(BaseModel):
    image: str
    command: list[str]
    workdir: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    ignore_error: bool = False


class AssignedTaskInput(BaseModel):
    path: str = Field(description="Where it appears in the containers.")
    directory: bool
    name: str
    files: list[AssignedFile]


class AssignedTaskOutput(BaseModel):
    path: str = Field(description="A path in the containers (a file, a folder or a pattern).")
    directory: bool
    path_prefix: str = ""


class AssignedTask(BaseModel):
    """A task's layout: its executors run one after the other, each in a container; what it reads and
    leaves lies at these paths in every container."""

    steps: list[AssignedStep]
    inputs: list[AssignedTaskInput]
    outputs: list[AssignedTaskOutput]
    volumes: list[str]
    user: str
    network: str


class Assignment(BaseModel):
    """A job to run, and the job token to report on it with."""

    id: uuid.UUID
    attempt: int
    token: str = Field(description="The job token (lcj_...): it holds this attempt of this job only.")
    token_expires_at: datetime
    lease_expires_at: datetime | None
    app: str
    version: str
    entrypoint: str
    spec: dict[str, Any] = Field(description="The entrypoint spec to run.")
    params: dict[str, Any]
    env: dict[str, str]
    resources: ResourcesOut
    inputs: dict[str, AssignedInput]
    image: str | None = Field(description="A rerun's container image, by content id: it runs the same.")
    task: AssignedTask | None = Field(None, description="A GA4GH TES task: its executors, files and outputs.")


class ClaimOut(BaseModel):
    job: Assignment


class LeaseOut(BaseModel):
    cancel: bool = Field(description="Stop the job: it is being cancelled.")
    lease_seconds: int
    heartbeat_interval_s: float


class StateOut(BaseModel):
    state: str


class LogSizeOut(BaseModel):
    size: int = Field(description="The bytes of this attempt's log the server holds.")


class CancelOut(BaseModel):
    cancel: bool = Field(description="Stop the job: it is being cancelled.")


class StoredOutput(BaseModel):
    path: str
    size: int
    sha256: str | None


@router.post("/heartbeat", response_model=HeartbeatOut, summary="I am alive; these are my jobs")
def heartbeat(body: HeartbeatIn, credential: Credential, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.session() as session:
        worker = workers.authenticate(session, credential)
        return workers.heartbeat(session, ctx.settings, worker, body.model_dump(mode="json"))


@router.post(
    "/attempts",
    response_model=AttemptsOut,
    summary="Which of these attempts still run (a worker sweeping its engine's containers)",
)
def attempts(body: AttemptsIn, credential: Credential, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.session() as session:
        workers.authenticate(session, credential)
        pairs = [(item.id, item.attempt) for item in body.attempts]
        active = claims.active_attempts(session, pairs)
    return {"active": [{"id": job_id, "attempt": attempt} for job_id, attempt in active]}


@router.post(
    "/claim",
    response_model=ClaimOut,
    summary="Take a job that fits (long poll)",
    responses={200: {"description": "an assignment"}, 204: {"description": "nothing within wait_s"}},
)
async def claim(body: ClaimIn, request: Request, credential: Credential, ctx: Ctx) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_s
    free = body.free.model_dump()
    while True:
        since = ctx.waker.generation
        found = await run_in_threadpool(_try_claim, ctx, credential, free, body.labels)
        if found is not None:
            return found
        remaining = deadline - loop.time()
        if remaining <= 0 or await request.is_disconnected():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await ctx.waker.wait(since, min(remaining, RECHECK_S))
        if await request.is_disconnected():  # nobody to hand a job to: leave it queued
            return Response(status_code=status.HTTP_204_NO_CONTENT)


def _try_claim(ctx: Ctx, credential: str, free: dict[str, float], labels: dict[str, str]) -> Any:
    with claims.claim_turn(ctx.db.engine.dialect.name), ctx.db.session() as session:
        worker = workers.authenticate(session, credential)
        claimed = claims.claim(session, ctx.settings, ctx.storage, worker, free, labels)
        if claimed is None:
            return None
        return {"job": claims.assignment(claimed)}


@router.post(
    "/jobs/{job_id}/take",
    response_model=ClaimOut,
    summary="A runner started by Slurm or Celery takes its job (job token); its lease starts",
    responses={
        409: {
            **problems(409)[409],
            "description": "fenced (nothing to run) or held (another runner has it; ask later)",
        }
    },
)
def take(job_id: uuid.UUID, credential: Credential, ctx: Ctx) -> dict[str, Any]:
    with claims.claim_turn(ctx.db.engine.dialect.name), ctx.db.session() as session:
        claimed = handover.take(session, ctx.settings, ctx.storage, credential, job_id)
        return {"job": claims.assignment(claimed)}


@router.post(
    "/jobs/{job_id}/heartbeat",
    response_model=LeaseOut,
    responses=problems(409),
    summary="A runner's job still runs: renew its lease",
)
def job_heartbeat(job_id: uuid.UUID, credential: Credential, ctx: Ctx) -> dict[str, Any]:
    with ctx.db.session() as session:
        return claims.job_heartbeat(session, ctx.settings, credential, job_id)


@router.post(
    "/jobs/{job_id}/start",
    response_model=StateOut,
    responses=problems(409),
    summary="Staging is done; the command starts now",
)
def start(job_id: uuid.UUID, credential: Credential, ctx: Ctx) -> dict[str, str]:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        if job.state == JobState.STAGING:
            lifecycle.transition(session, job, JobState.RUNNING)
        return {"state": job.state}


@router.get(
    "/jobs/{job_id}/inputs/{file_id}",
    response_class=Response,
    responses={**file_download_responses(), **problems(409)},
    summary="An input file's bytes (local storage)",
)
def input_file(
    job_id: uuid.UUID, file_id: uuid.UUID, request: Request, credential: Credential, ctx: Ctx
) -> Response:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        row = claims.input_file(session, job, file_id)
        return send_file(ctx, request, row)


@router.get(
    "/jobs/{job_id}/task-inputs/{index}",
    response_class=Response,
    responses={200: binary(description="The input's bytes."), **problems(404, 409, 422)},
    summary="A task input's bytes: its inline content, or fetched by the server (s3://, http(s)://)",
)
def task_input(job_id: uuid.UUID, index: int, credential: Credential, ctx: Ctx) -> Response:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        row = tes_run.task_row(session, job)
        if row is None:
            raise NotFound("The job is no task.")
        session.expunge(row)
    ctx.settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    spool = tempfile.TemporaryFile(dir=ctx.settings.uploads_dir)  # noqa: SIM115 (closed by _chunks)
    try:
        tes_run.input_bytes(ctx.settings, row, index, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(
        _chunks(spool),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


def _chunks(spool: BinaryIO) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(CHUNK):
            yield chunk


@router.post(
    "/jobs/{job_id}/log",
    response_model=LogSizeOut,
    responses={
        409: {"model": LogSizeOut, "description": "the chunk starts past the log's end: send from size"},
        **problems(413),
    },
    summary="Append to the job's log at an offset (idempotent)",
)
async def log(job_id: uuid.UUID, request: Request, credential: Credential, ctx: Ctx) -> Any:
    """The chunk is read only once the job token is known to hold the job, and only up to
    ``max_log_chunk_bytes`` (413 beyond)."""
    try:
        offset = int(request.headers.get("log-offset", ""))
    except ValueError:
        raise InvalidInput.field(["header", "log-offset"], "send the chunk's start offset") from None
    if not 0 <= offset <= job_logs.MAX_OFFSET:
        raise InvalidInput.field(["header", "log-offset"], f"an offset from 0 to {job_logs.MAX_OFFSET}")
    await run_in_threadpool(_held_owner, ctx, credential, job_id)
    data = await read_body(request, ctx.settings.max_log_chunk_bytes, "The log chunk")
    return await run_in_threadpool(_append_log, ctx, credential, job_id, offset, data)


def _append_log(ctx: Ctx, credential: str, job_id: uuid.UUID, offset: int, data: bytes) -> Any:
    """Offsets count from the start of this attempt's log, which begins at the job's log base."""
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        base = executor_refs.log_base(job.executor_ref)
    appended = job_logs.append(ctx.settings, job_id, base, offset, data)
    if appended.gap:
        return Response(
            status_code=status.HTTP_409_CONFLICT,
            content=f'{{"size": {appended.size}}}',
            media_type="application/json",
        )
    return {"size": appended.size}


@router.post(
    "/jobs/{job_id}/progress",
    response_model=CancelOut,
    responses=problems(409),
    summary="How far the job is; answers whether to cancel",
)
def progress(job_id: uuid.UUID, body: ProgressIn, credential: Credential, ctx: Ctx) -> dict[str, bool]:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        job.progress = body.fraction
        return {"cancel": job.state == "cancelling"}


@router.put(
    "/jobs/{job_id}/outputs/{path:anypath}",
    response_model=StoredOutput,
    responses=problems(409, 413),
    summary="Store one output file",
)
async def output(job_id: uuid.UUID, path: str, request: Request, credential: Credential, ctx: Ctx) -> Any:
    rel = files.clean(path, ["path", "path"])
    dest = f"{files.job_outputs_folder(job_id)}/{rel}"
    owner = await run_in_threadpool(_held_owner, ctx, credential, job_id)
    task = await run_in_threadpool(_is_task, ctx, job_id)
    length_header = request.headers.get("content-length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    source, size, sha256 = await file_store.receive(ctx.settings, request.stream(), length, None)
    try:
        await run_in_threadpool(_held_owner, ctx, credential, job_id)  # still ours after the upload?
    except BaseException:
        source.unlink(missing_ok=True)
        raise
    if task:  # a task's files go where its outputs point
        upload = files.Upload(rel, source, size, sha256)
        await run_in_threadpool(tes_run.deliver, ctx.db, ctx.storage, ctx.settings, job_id, owner, upload)
        return {"path": rel, "size": size, "sha256": sha256}
    entries = await run_in_threadpool(
        file_store.publish_many,
        ctx.db,
        ctx.storage,
        ctx.settings,
        owner,
        [files.Upload(dest, source, size, sha256)],
        job_id=job_id,
        enforce_limit=False,
    )
    return {"path": rel, "size": entries[0].size, "sha256": entries[0].sha256}


def _step_end(step: StepEnd, base: int) -> dict[str, Any]:
    found = step.model_dump()
    for key in ("log_start", "log_end"):
        if found[key] is not None:
            found[key] += base
    return found


def _is_task(ctx: Ctx, job_id: uuid.UUID) -> bool:
    with ctx.db.session() as session:
        job = session.get(Job, job_id)
        return job is not None and tes_run.task_row(session, job) is not None


def _held_owner(ctx: Ctx, credential: str, job_id: uuid.UUID) -> files.Space:
    """The space the held job's outputs go to (its project's, written as its owner's)."""
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        return tes_run.outputs_space(session, job)


@router.post(
    "/jobs/{job_id}/finish",
    response_model=StateOut,
    responses=problems(409),
    summary="The run ended; outputs are uploaded",
)
def finish(job_id: uuid.UUID, body: FinishIn, credential: Credential, ctx: Ctx) -> dict[str, str]:
    end = RunEnd(
        body.outcome,
        body.exit_code,
        body.message,
        {k: v for k, v in body.usage.items() if k in ("wall_s", "cpu_s", "peak_memory_mb")},
        problem=body.problem,
        note=body.note,
        image=body.image,
    )
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        if body.steps is not None:  # their log stretches, in the job's log (where this attempt's begins)
            base = executor_refs.log_base(job.executor_ref)
            end = dataclasses.replace(end, steps=[_step_end(step, base) for step in body.steps])
        lifecycle.record_end(session, job, end, tes_run.count_outputs(session, job))
        return {"state": job.state}
