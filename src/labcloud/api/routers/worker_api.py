"""What remote workers call (docs/worker-protocol.md), and the gate every call of the protocol passes: a
worker token, or the job token of the job in the path. Here: heartbeat and claim, with the worker token;
a held job's calls (start, inputs, log, progress, outputs, finish, with the job token that came with the
claim) are :mod:`labcloud.api.routers.worker_jobs`. The bodies are :mod:`labcloud.api.worker_schemas`."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from labcloud.api.deps import Ctx, bearer_credential, oauth2_scheme
from labcloud.api.worker_schemas import AttemptsIn, AttemptsOut, ClaimIn, ClaimOut, HeartbeatIn, HeartbeatOut
from labcloud.errors import Unauthorized
from labcloud.http.guard import GuardedRoute, gate
from labcloud.runtime import Runtime
from labcloud.services import claims, job_tokens, workers

router = APIRouter(prefix="/api/v1/worker", tags=["worker protocol"], route_class=GuardedRoute)
_KNOWN = workers.KnownTokens()


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
            request.state.worker_id = workers.check_token(session, credential)
            _KNOWN.remember(credential, request.state.worker_id)


def _known_worker(request: Request, ctx: Runtime) -> bool:
    """A worker token let in moments ago (its worker's id noted for the route): no second look before the
    body is read. Every route behind the gate loads its worker anew and refuses a revoked one."""
    credential = bearer_credential(request)
    worker_id = _KNOWN.get(credential) if credential else None
    if worker_id is None:
        return False
    request.state.worker_id = worker_id
    request.state.remembered = True  # a route that may answer without loading its worker checks it first
    return True


def _path_job_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(request.path_params["job_id"]))
    except (KeyError, ValueError):
        return None


@gate(_worker_gate, known=_known_worker)
async def _credential(credential: Annotated[str | None, Depends(oauth2_scheme)]) -> str:
    if not credential:
        raise Unauthorized("Authentication is required: send 'Authorization: Bearer <token>'.")
    return credential


Credential = Annotated[str, Depends(_credential)]


@router.post("/heartbeat", response_model=HeartbeatOut, summary="I am alive; these are my jobs")
async def heartbeat(body: HeartbeatIn, request: Request, credential: Credential, ctx: Ctx) -> Response:
    gated = getattr(request.state, "worker_id", None)  # the gate's (it checked the token)
    worker_id = (
        gated if isinstance(gated, uuid.UUID) else await run_in_threadpool(_worker_id, ctx, credential)
    )
    answer = await ctx.heartbeats.beat(worker_id, body.model_dump(mode="json"))
    # Answered as built (the shape is HeartbeatOut's, for the documentation): not validated again.
    return Response(json.dumps(answer, default=str, separators=(",", ":")), media_type="application/json")


def _worker_id(ctx: Ctx, credential: str) -> uuid.UUID:
    with ctx.db.sessions() as session:
        return workers.check_token(session, credential)


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
    # Let in by a remembered token: is it still good? A claim's own attempt checks it in the database
    # (revoked: 401); only a claim that answers or waits without one looks it up by itself.
    unchecked = bool(getattr(request.state, "remembered", False))
    watch = ctx.queue_watch
    while True:
        since = ctx.waker.generation
        idle = watch.known_idle(since)
        if idle is None:
            idle = await run_in_threadpool(watch.idle, since)
        found = None
        if not idle:
            found = await run_in_threadpool(
                _try_claim, ctx, credential, free, body.labels, body.start, body.max_jobs
            )
            unchecked = False
        if found is not None:
            return found
        if unchecked:
            await run_in_threadpool(_worker_id, ctx, credential)
            unchecked = False
        remaining = deadline - loop.time()
        if remaining <= 0 or await request.is_disconnected():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        # Until a wake-up (the server's one recheck sends one while a job waits) or the deadline.
        await ctx.waker.wait(since, remaining)
        if await request.is_disconnected():  # nobody to hand a job to: leave it queued
            return Response(status_code=status.HTTP_204_NO_CONTENT)


def _try_claim(
    ctx: Ctx, credential: str, free: dict[str, float], labels: dict[str, str], start: bool, most: int
) -> Any:
    with claims.claim_turn(ctx.db.engine.dialect.name), ctx.db.session() as session:
        worker = workers.authenticate(session, credential)
        taken = claims.claim(session, ctx.settings, ctx.storage, worker, free, labels, start, most)
        if not taken:
            return None
        first, *more = (claims.assignment(claimed) for claimed in taken)
        return {"job": first, "more": more}
