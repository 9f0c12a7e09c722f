"""A job's log over HTTP, the same for the API and the pages: its text from an offset, or, followed,
server-sent events until the job ends (:mod:`labcloud.services.job_logs` reads, follows and frames it)."""

from __future__ import annotations

import uuid

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from labcloud.db.models import User
from labcloud.runtime import Runtime
from labcloud.services import job_logs
from labcloud.services import jobs as job_service
from labcloud.services.job_states import JobState


async def log_response(
    ctx: Runtime,
    request: Request,
    user: User,
    job_id: uuid.UUID,
    *,
    follow: bool,
    offset: int,
    times: bool = False,
) -> Response:
    """The log of a job ``user`` may read, with ``times`` when each line came (text: leading each line;
    followed: a ``times`` event before each ``log`` event); no database session is held while it
    streams."""

    def state() -> JobState:
        with ctx.db.session() as session:
            return JobState(job_service.get_job(session, user, job_id).state)

    current = await run_in_threadpool(state)
    if not follow:
        if times:
            return PlainTextResponse(
                await run_in_threadpool(job_logs.read_timed, ctx.settings, job_id, offset)
            )
        data = await run_in_threadpool(job_logs.read, ctx.settings, job_id, offset)
        return PlainTextResponse(job_logs.text(data))
    offset = job_logs.resume_offset(offset, request.headers.get("last-event-id"))
    events = job_logs.follow(ctx.db, ctx.settings, job_id, offset, current, request.is_disconnected, times)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
