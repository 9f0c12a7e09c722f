"""The calls a remote runner makes about the one job its job token holds (docs/worker-protocol.md): take
it (a runner Slurm or Celery started), renew its lease, start it, fetch its inputs, append to its log,
report progress, store its outputs, finish it. Each adapts HTTP to a service (:mod:`labcloud.services.
remote_runs`, ``claims``, ``handover``, ``tes_run``, ``file_store``); the gate and the credential are
:mod:`labcloud.api.routers.worker_api`'s."""

from __future__ import annotations

import base64
import binascii
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from labcloud.api.deps import Ctx
from labcloud.api.openapi import binary, file_download_responses, problems
from labcloud.api.routers.worker_api import Credential
from labcloud.api.worker_schemas import (
    CancelOut,
    ClaimOut,
    FinishIn,
    LeaseOut,
    LogSizeOut,
    ProgressIn,
    StateOut,
    StoredOutput,
)
from labcloud.db.models import Job
from labcloud.errors import InvalidInput, NotFound
from labcloud.execution.run_end import RunEnd
from labcloud.http.downloads import send_file
from labcloud.http.guard import GuardedRoute, read_body
from labcloud.protocol import FINISH_LOG_MAX
from labcloud.services import (
    claims,
    file_store,
    files,
    handover,
    job_files,
    job_logs,
    job_tokens,
    remote_runs,
    tes_run,
)

router = APIRouter(prefix="/api/v1/worker", tags=["worker protocol"], route_class=GuardedRoute)
CHUNK = 1 << 20


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
def take(
    job_id: uuid.UUID,
    credential: Credential,
    ctx: Ctx,
    start: bool = Query(
        False,
        description="start at once a job with nothing to stage (no inputs, not a task, no container): "
        "its assignment's state is then 'running', and no start call follows",
    ),
) -> dict[str, Any]:
    # (a query, not a body: a body's gate wants the job held already, and this is how it gets held)
    with claims.claim_turn(ctx.db.engine.dialect.name), ctx.db.session() as session:
        claimed = handover.take(session, ctx.settings, ctx.storage, credential, job_id, start=start)
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
        return {"state": remote_runs.start(session, ctx.settings, credential, job_id)}


@router.get(
    "/jobs/{job_id}/inputs/{file_id}",
    response_class=Response,
    responses={**file_download_responses(), **problems(409)},
    summary="A task input's file of the space (local storage)",
)
def input_file(
    job_id: uuid.UUID, file_id: uuid.UUID, request: Request, credential: Credential, ctx: Ctx
) -> Response:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        row = claims.input_file(session, job, file_id)
        return send_file(ctx, request, row)


@router.get(
    "/jobs/{job_id}/pinned/{pin_id}",
    response_class=Response,
    responses={**file_download_responses(), **problems(409)},
    summary="The content an input was pinned to at submit (local storage)",
)
def pinned_input(
    job_id: uuid.UUID, pin_id: int, request: Request, credential: Credential, ctx: Ctx
) -> Response:
    with ctx.db.session() as session:
        job, _ = job_tokens.held_job(session, ctx.settings, credential, job_id)
        row = claims.pinned_input(session, job, pin_id)
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
    appended = await run_in_threadpool(
        remote_runs.append_log, ctx.db, ctx.settings, credential, job_id, offset, data
    )
    if appended.gap:
        return _log_gap(appended.size)
    return {"size": appended.size}


@router.post(
    "/jobs/{job_id}/progress",
    response_model=CancelOut,
    responses=problems(409),
    summary="How far the job is; answers whether to cancel",
)
def progress(job_id: uuid.UUID, body: ProgressIn, credential: Credential, ctx: Ctx) -> dict[str, bool]:
    with ctx.db.session() as session:
        return {"cancel": remote_runs.progress(session, ctx.settings, credential, job_id, body.fraction)}


@router.put(
    "/jobs/{job_id}/outputs/{path:anypath}",
    response_model=StoredOutput,
    responses=problems(409, 413),
    summary="Store one output file",
)
async def output(job_id: uuid.UUID, path: str, request: Request, credential: Credential, ctx: Ctx) -> Any:
    rel = files.clean(path, ["path", "path"])
    dest = f"{job_files.job_outputs_folder(job_id)}/{rel}"
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
    responses={
        409: {
            **problems(409)[409],
            "description": "fenced (the job is no longer this runner's); or, as {\"size\": n}, the log's end "
            "starts past the n bytes the server holds: send the log from there, then finish again",
        }
    },
    summary="The run ended; outputs are uploaded",
)
def finish(job_id: uuid.UUID, body: FinishIn, credential: Credential, ctx: Ctx) -> Any:
    end = RunEnd(
        body.outcome,
        body.exit_code,
        body.message,
        {k: v for k, v in body.usage.items() if k in ("wall_s", "cpu_s", "peak_memory_mb")},
        problem=body.problem,
        note=body.note,
        image=body.image,
    )
    steps = None if body.steps is None else [step.model_dump() for step in body.steps]
    log_end = None if body.log is None else (body.log.offset, _log_bytes(body.log.data, ctx))
    try:
        with ctx.db.session() as session:
            state = remote_runs.finish(session, ctx.settings, credential, job_id, end, steps, log_end)
    except remote_runs.LogGap as gap:
        return _log_gap(gap.size)
    return {"state": state}


def _log_bytes(data: str, ctx: Ctx) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise InvalidInput.field(["log", "data"], "base64 of the log's bytes") from None
    limit = min(FINISH_LOG_MAX, ctx.settings.max_log_chunk_bytes)
    if len(raw) > limit:  # (a worker then sends the log on its own, in chunks it may)
        raise InvalidInput.field(["log", "data"], f"at most {limit} bytes once decoded")
    return raw


def _log_gap(size: int) -> Response:
    """409 with the bytes of the log the server holds: the runner sends from there."""
    return Response(
        status_code=status.HTTP_409_CONFLICT, content=f'{{"size": {size}}}', media_type="application/json"
    )
