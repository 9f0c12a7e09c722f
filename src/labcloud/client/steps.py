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
from pathlib import Path
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


@dataclass(frozen=True)
class Download:
    """Stream ``GET {path}`` into the file ``dest``; the answer is the number of bytes."""

    path: str
    dest: Path
    on_progress: Callable[[int], None] | None = None


class _Run:
    """Where a run of steps is: the step to carry out next, or its result once ``finished``."""

    def __init__(self, steps: Generator[Any, Any, Any]) -> None:
        self.steps = steps
        self.finished, self.step = self._advance(None, None)

    def _advance(self, answer: Any, error: ClientError | None) -> tuple[bool, Any]:
        """Hand the last step's answer (or error) on: (True, the result) or (False, the next step)."""
        try:
            return False, self.steps.send(answer) if error is None else self.steps.throw(error)
        except StopIteration as done:
            return True, done.value

    def answer(self, value: Any) -> None:
        self.finished, self.step = self._advance(value, None)

    def fail(self, error: ClientError) -> None:
        self.finished, self.step = self._advance(None, error)


def drive(steps: Generator[S, Any, R], perform: Callable[[S], Any]) -> R:
    """Run ``steps`` to the end, carrying out each with ``perform``; its return value."""
    with contextlib.closing(steps):
        run = _Run(steps)
        while not run.finished:
            try:
                value = perform(run.step)
            except ClientError as exc:
                run.fail(exc)
            else:
                run.answer(value)
        return cast(R, run.step)


async def adrive(steps: Generator[S, Any, R], perform: Callable[[S], Awaitable[Any]]) -> R:
    """:func:`drive` for an asynchronous ``perform``."""
    with contextlib.closing(steps):
        run = _Run(steps)
        while not run.finished:
            try:
                value = await perform(run.step)
            except ClientError as exc:
                run.fail(exc)
            else:
                run.answer(value)
        return cast(R, run.step)
