"""Work written once for the sync and the async client.

A piece of work that talks to the server more than once (a resumable upload, waiting for a job) is a
generator: it yields *steps* (a request to make, a pause) and is sent each step's answer, or thrown the
:class:`~labcloud.client.errors.ClientError` the step raised, so it reads like straight-line code with
``answer = yield step``. :func:`drive` carries the steps out with a blocking connection, :func:`adrive`
with an asynchronous one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from labcloud.client.errors import ClientError

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next step (a back-off, a polling interval)."""

    seconds: float


@dataclass(frozen=True)
class FetchJob:
    """Read a job (its JSON); the answer is the job, or the ClientError reading it raised."""

    job_id: str


def _advance(steps: Generator[S, Any, R], answer: Any, error: ClientError | None) -> tuple[bool, Any]:
    """Hand the last step's answer (or error) to ``steps``: (True, its result) or (False, the next step)."""
    try:
        return False, steps.send(answer) if error is None else steps.throw(error)
    except StopIteration as done:
        return True, done.value


def drive(steps: Generator[S, Any, R], perform: Callable[[S], Any]) -> R:
    """Run ``steps`` to the end, carrying out each with ``perform``; its return value."""
    answer: Any = None
    error: ClientError | None = None
    with contextlib.closing(steps):
        while True:
            finished, step = _advance(steps, answer, error)
            if finished:
                return cast(R, step)
            try:
                answer, error = perform(step), None
            except ClientError as exc:
                answer, error = None, exc


async def adrive(steps: Generator[S, Any, R], perform: Callable[[S], Awaitable[Any]]) -> R:
    """:func:`drive` for an asynchronous ``perform``."""
    answer: Any = None
    error: ClientError | None = None
    with contextlib.closing(steps):
        while True:
            finished, step = _advance(steps, answer, error)
            if finished:
                return cast(R, step)
            try:
                answer, error = await perform(step), None
            except ClientError as exc:
                answer, error = None, exc
