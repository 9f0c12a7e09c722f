"""Jobs: submit, list, read, cancel, rerun, delete; logs (live), history, outputs."""

from __future__ import annotations

import uuid
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from labcloud.api import job_list
from labcloud.api.deps import Ctx, DbSession, PageCursor, PageLimit, Reader, StreamReader, Writer
from labcloud.api.job_schemas import (
    AttemptOut,
    InputFileOut,
    JobDetail,
    JobEventOut,
    JobOut,
    JobSubmit,
    OutputFile,
)
from labcloud.api.openapi import binary, file_download_responses, problems
from labcloud.api.schemas import PageOut
from labcloud.db.models import Job
from labcloud.http import job_log
from labcloud.http.downloads import send_file, send_outputs_zip
from labcloud.http.guard import GuardedRoute
from labcloud.services import accounting, files, job_checks, job_files, job_logs
from labcloud.services import jobs as job_service
from labcloud.services.job_states import JobState
from labcloud.services.pagination import DEFAULT_PAGE_SIZE

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], route_class=GuardedRoute)


class RerunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: job_service.RerunImage = Field(
        "pinned",
        description="A container job's image: the one its job ran (pinned, by content id) or the one its "
        "reference names now (current).",
    )
    inputs: job_service.RerunInputs = Field(
        "original",
        description="Its inputs: the exact content the job ran with (original), even if those files were "
        "changed or deleted since, or what their paths hold now (current).",
    )


def _out(
    job: Job, ctx: Ctx, session: Session, detail: bool = False, names: job_service.Names | None = None
) -> JobOut:
    model = JobDetail if detail else JobOut
    out = model.model_validate(job)
    out.message = ctx.message(job)
    names = names or job_service.names_of(session, [job])
    out.project = names.projects.get(job.project_id, "")
    out.owner = names.owners.get(job.owner_id, "")
    out.worker = names.workers.get(job.worker_id) if job.worker_id is not None else None
    out.workers = names.targets.get(job.id, [])
    if isinstance(out, JobDetail) and job.attempts > 0:  # (a job that never ran has no attempt to show)
        out.attempt_history = [AttemptOut.model_validate(r) for r in accounting.attempts(session, job)]
    return out


def _json(out: JobOut, status_code: int = status.HTTP_200_OK) -> Response:
    """``out`` as FastAPI would send it for the route's response model, without checking it again."""
    return Response(out.model_dump_json(), status_code=status_code, media_type="application/json")


@router.post(
    "",
    response_model=JobDetail,
    status_code=status.HTTP_201_CREATED,
    operation_id="submit_job",
    summary="Submit a job",
)
def submit(body: JobSubmit, principal: Writer, session: DbSession, ctx: Ctx) -> Response:
    job = ctx.submit(session, principal.user, job_service.Submission(**body.model_dump()))
    names = job_service.names_of_submitted(session, principal.user, job)
    return _json(_out(job, ctx, session, detail=True, names=names), status.HTTP_201_CREATED)


@router.get("", response_model=PageOut[JobOut], summary="List your jobs, newest first")
def list_jobs(
    principal: Reader,
    session: DbSession,
    ctx: Ctx,
    state: list[JobState] = Query([], description="Repeat for several states."),
    app: str | None = Query(None, max_length=64),
    tag: list[str] = Query([], description="key=value; repeat to require several (at most 20)."),
    q: str | None = Query(None, max_length=200, description="Words the job's name contains (any case)."),
    created_after: AwareDatetime | None = Query(None),
    created_before: AwareDatetime | None = Query(None),
    project: str | None = Query(
        None,
        max_length=40,
        description="A project's jobs, everyone's (you need a role in it); default: yours.",
    ),
    everyone: bool = Query(False, description="Every user's jobs (administrators only)."),
    order: Literal["newest", "oldest"] = Query("newest", description="Newest first, or oldest first."),
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
) -> Response:
    flt = job_service.JobFilter(
        states=list(dict.fromkeys(state)),
        app=app,
        tags=job_checks.tag_filters(tag, ["query", "tag"]),
        text=q,
        created_after=created_after,
        created_before=created_before,
        project=project,
        everyone=everyone,
        oldest_first=order == "oldest",
    )
    return job_list.list_response(ctx, session, principal.user, flt, limit=limit, cursor=cursor)


@router.get("/{job_id}", response_model=JobDetail, summary="One job")
def get_job(job_id: uuid.UUID, principal: Reader, session: DbSession, ctx: Ctx) -> Response:
    return _json(_out(job_service.get_job(session, principal.user, job_id), ctx, session, detail=True))


@router.post(
    "/{job_id}/cancel",
    response_model=JobDetail,
    operation_id="cancel_job",
    responses=problems(409),
    summary="Cancel a job",
)
def cancel(job_id: uuid.UUID, principal: Writer, session: DbSession, ctx: Ctx) -> JobOut:
    """A queued job is cancelled at once; a running one becomes `cancelling` until its process is gone."""
    return _out(ctx.cancel(session, principal.user, job_id), ctx, session, detail=True)


@router.post(
    "/{job_id}/rerun",
    response_model=JobDetail,
    status_code=status.HTTP_201_CREATED,
    operation_id="rerun_job",
    summary="Run again",
)
def rerun(
    job_id: uuid.UUID, principal: Writer, session: DbSession, ctx: Ctx, body: RerunIn | None = None
) -> JobOut:
    """A new job with the same app version, entrypoint, parameters, inputs and resources. A container
    job's runs the image its job ran, by content id, even if the image's tag names another one now; with
    `{"image": "current"}` it runs what the tag names now."""
    body = body or RerunIn()
    new = ctx.rerun(session, principal.user, job_id, body.image, body.inputs)
    return _out(new, ctx, session, detail=True)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_job",
    responses=problems(409),
    summary="Delete an ended job",
)
def delete(job_id: uuid.UUID, principal: Writer, session: DbSession, ctx: Ctx) -> Response:
    """Removes the job, its history, log and outputs. Only for jobs that have ended."""
    ctx.delete_job(session, principal.user, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/events",
    response_model=list[JobEventOut],
    operation_id="list_job_events",
    summary="The job's history",
)
def events(job_id: uuid.UUID, principal: Reader, session: DbSession) -> list[JobEventOut]:
    job = job_service.get_job(session, principal.user, job_id)
    return [JobEventOut.model_validate(e) for e in job_service.events(session, job)]


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    operation_id="get_job_log",
    responses={
        200: {
            "description": "The log as text; with follow=true a stream of server-sent events: `log` events "
            "(one `data:` line a whole log line, `id:` the byte offset to resume from, as `offset` or as "
            "the `Last-Event-ID` header, which wins) and a last `end` event with the job's state. With "
            "times=true each line comes with when it came: as text, an ISO 8601 UTC time leads it; followed, "
            "a `times` event (a JSON list, ms since the epoch, one per line) comes before each `log` event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    summary="The job's log; ?follow=true streams it live (server-sent events)",
)
async def logs(
    job_id: uuid.UUID,
    request: Request,
    principal: StreamReader,
    ctx: Ctx,
    follow: bool = Query(False),
    offset: int = Query(0, ge=0, le=job_logs.MAX_OFFSET, description="Start at this byte of the log."),
    times: bool = Query(False, description="When each line came (as noted while the job ran)."),
) -> Response:
    return await job_log.log_response(
        ctx, request, principal.user, job_id, follow=follow, offset=offset, times=times
    )


@router.get(
    "/{job_id}/inputs",
    response_model=list[InputFileOut],
    operation_id="list_job_inputs",
    summary="The files the job's inputs brought, as it read them",
)
def inputs(job_id: uuid.UUID, principal: Reader, session: DbSession) -> list[InputFileOut]:
    """Each file of each input with the checksum of the content the job ran with, kept while the job
    exists: renaming, deleting or uploading over the file at its path changes `now`, never what the job
    used. Its `url` downloads that content."""
    return [
        InputFileOut(
            slot=f.pin.slot,
            path=f.pin.rel,
            source=f.source,
            size=f.pin.size,
            sha256=f.pin.sha256,
            now=f.now,
            url=f"/api/v1/jobs/{job_id}/inputs/{f.pin.slot}/{quote(f.pin.rel)}" if f.readable else None,
        )
        for f in job_service.input_files(session, principal.user, job_id)
    ]


@router.get(
    "/{job_id}/inputs/{slot}/{path:anypath}",
    response_class=Response,
    operation_id="download_job_input",
    responses=file_download_responses(),
    summary="Download the content one of the job's input files had when it was submitted",
)
def input_file(
    job_id: uuid.UUID, slot: str, path: str, request: Request, principal: StreamReader, ctx: Ctx
) -> Response:
    with ctx.db.session() as session:
        row = job_service.input_file(session, principal.user, job_id, slot, path)
    return send_file(ctx, request, row)


@router.get(
    "/{job_id}/outputs",
    response_model=list[OutputFile],
    operation_id="list_job_outputs",
    summary="The job's output files",
)
def outputs(job_id: uuid.UUID, principal: Reader, session: DbSession) -> list[OutputFile]:
    """Paths are relative to the job's folder, ``jobs/{job_id}/`` in your space (for a job of a shared
    project: ``projects/<slug>/jobs/{job_id}/``)."""
    rows = job_service.outputs(session, principal.user, job_id)
    start = len(job_files.job_outputs_folder(job_id)) + 1
    return [OutputFile(path=r.path[start:], size=r.size, sha256=r.sha256) for r in rows]


@router.get(
    "/{job_id}/outputs.zip",
    response_class=Response,
    operation_id="download_job_outputs_zip",
    responses={200: binary("application/zip", "The outputs, as a zip.")},
    summary="All outputs as one zip, streamed while it is built",
)
def outputs_zip(job_id: uuid.UUID, principal: StreamReader, ctx: Ctx) -> StreamingResponse:
    with ctx.db.session() as session:  # not held while the zip streams
        rows = job_service.outputs(session, principal.user, job_id)
    return send_outputs_zip(ctx.storage, job_id, rows)


@router.get(
    "/{job_id}/outputs/{path:anypath}",
    response_class=Response,
    operation_id="download_job_output",
    responses=file_download_responses(),
    summary="Download one output file",
)
def output_file(
    job_id: uuid.UUID, path: str, request: Request, principal: StreamReader, ctx: Ctx
) -> Response:
    rel = files.clean(path, ["path", "path"])
    with ctx.db.session() as session:
        row = job_service.output(session, principal.user, job_id, rel)
    return send_file(ctx, request, row)
