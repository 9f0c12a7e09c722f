"""Writing a request body to disk while the next bytes arrive.

An upload's bytes come in on the event loop; hashing and writing them is blocking work for a worker thread.
Awaiting each write before reading on leaves one of the two idle at any moment. :class:`WriteBehind` keeps
one write in flight: the loop reads the next buffer while a thread hashes and writes the previous one (both
release the GIL for large buffers), so at most two buffers are held, and writes still happen in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool


class WriteBehind:
    def __init__(self) -> None:
        self._inflight: asyncio.Future[Any] | None = None

    async def put(self, write: Callable[..., Any], *args: Any) -> None:
        """Start ``write(*args)`` in a thread once the previous write is done (its error is raised here)."""
        await self.drain()
        self._inflight = asyncio.ensure_future(run_in_threadpool(write, *args))

    async def drain(self) -> None:
        """Wait for the write in flight; raise its error."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def settle(self) -> None:
        """After a failure: wait until no thread still writes (a file is not cut or closed under it), its
        outcome set aside."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        cancelled = False
        while not inflight.done():  # even when cancelled meanwhile: the thread cannot be stopped
            try:
                await asyncio.wait([inflight])
            except asyncio.CancelledError:
                cancelled = True
        if not inflight.cancelled():
            inflight.exception()  # looked at: not reported as never retrieved
        if cancelled:
            raise asyncio.CancelledError
