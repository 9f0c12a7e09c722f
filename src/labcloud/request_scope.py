"""What a request gets from the server, for the API and the pages alike: the runtime, its settings, and
one database session whose transaction commits before the answer is sent.

Dependencies that do no I/O are ``async`` so that they run on the event loop instead of taking a trip
through the thread pool each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from labcloud.http.guard import adopt_session
from labcloud.runtime import Runtime
from labcloud.settings import Settings


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.ctx
    return runtime


async def get_settings(ctx: Annotated[Runtime, Depends(get_runtime)]) -> Settings:
    return ctx.settings


async def get_session(
    request: Request, ctx: Annotated[Runtime, Depends(get_runtime)]
) -> AsyncIterator[Session]:
    """One transaction per request: committed when the handler succeeds, rolled back otherwise; before
    the answer (see ``DbSession``), so a commit that fails (a locked database) is an error answer (503,
    see :mod:`labcloud.http.problems`), never a success for a write that did not happen.

    The session is made on the event loop (that does no I/O) or is the one the route's gate opened for
    this request (:func:`labcloud.http.guard.hand_over_session`); only its end, the commit, goes through
    the thread pool."""
    session = adopt_session(request) or ctx.db.sessions()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(discard, session)
        raise
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(_commit, session)


def _commit(session: Session) -> None:
    """Commit and close (a commit that fails rolls back, closes and raises)."""
    try:
        session.commit()
    except BaseException:
        discard(session)
        raise
    session.close()


def discard(session: Session) -> None:
    """Roll back and close."""
    try:
        session.rollback()
    finally:
        session.close()


Ctx = Annotated[Runtime, Depends(get_runtime)]
# scope="function": the commit happens before the answer goes out. With FastAPI's default ("request") the
# code after ``yield`` runs once the response has been sent: a client could hear "201 Created" before the
# row exists (its next request not finding it) and a failing commit would reach it as a success.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]
