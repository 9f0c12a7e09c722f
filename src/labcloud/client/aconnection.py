"""The asynchronous twin of :class:`labcloud.client.connection.Connection`: the same requests
(:mod:`labcloud.client.calls`), the same uploads and waiting (written once as steps), on an
``httpx.AsyncClient``; what :class:`labcloud.client.AsyncClient` is built on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, Unpack

import httpx

from labcloud.client import calls, uploads
from labcloud.client.connection_base import ConnectionBase, unreadable
from labcloud.client.downloads import CHUNK, PartialFile, downloading
from labcloud.client.errors import ClientError, NotFound, check_options
from labcloud.client.jobs import waiting
from labcloud.client.sse import LogFollow, SseEvent, SseParser
from labcloud.client.steps import Download, FetchJob, Pause, adrive
from labcloud.client.uploads import (
    Progress,
    TransferOptions,
    UploadOptions,
    UploadWatcher,
    normalise_remote,
)

__all__ = ["AsyncConnection"]


class AsyncConnection(ConnectionBase):
    """The HTTP API of one labcloud server, as one user, for ``asyncio`` code. Many requests may run at
    once on one connection."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, token, timeout=timeout)
        self._http = httpx.AsyncClient(**self._client_options())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; any non-2xx answer or network failure raises :class:`ClientError`."""
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = await self._http.request(method, self._url(path), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise ClientError.from_response(response)
        return response

    async def call(self, call: calls.Call) -> Any:
        """Send a described request; its JSON, text, response or None, as the call says."""
        extra = {"timeout": call.timeout} if call.timeout is not None else {}
        response = await self.request(call.method, call.path, headers=call.headers, **call.options(), **extra)
        return self._answer(call, response)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed response (no read timeout); errors are raised before the body is handed out."""
        headers = self._headers(kwargs.pop("headers", None))
        timeout = httpx.Timeout(10.0, read=None)
        try:
            async with self._http.stream(
                method, self._url(path), headers=headers, timeout=timeout, **kwargs
            ) as resp:
                if resp.is_error:
                    await resp.aread()
                    raise ClientError.from_response(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    async def pages(
        self, path: str, params: dict[str, Any], page_size: int = 200
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a cursor-paged listing, ``page_size`` at a time, following ``next_cursor``."""
        query = {**params, "limit": page_size}
        while True:
            page = await self.call(calls.Call("GET", path, params=query))
            for item in page.get("items", []):
                yield item
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    async def perform(self, step: Any) -> Any:
        """Carry out one step of work written as steps (:mod:`labcloud.client.steps`)."""
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, FetchJob):
            return await self.call(calls.job(step.job_id))
        if isinstance(step, uploads.Create):
            return (await self.call(calls.tus_create(step.remote, step.size))).headers
        if isinstance(step, uploads.Offset):
            return int((await self.call(calls.tus_offset(step.url))).headers["Upload-Offset"])
        if isinstance(step, uploads.Append):
            return (await self.call(calls.tus_append(step.url, step.offset, step.data))).headers
        if isinstance(step, uploads.Lookup):
            return await self.file_info(step.remote)
        if isinstance(step, Download):
            return await self.download(step.path, step.dest, step.on_progress)
        raise TypeError(f"not a step: {step!r}")

    async def file_info(self, path: str) -> dict[str, Any] | None:
        """The file at ``path`` of the user's space, ``{path, type: "folder"}`` for a folder, None when
        there is nothing."""
        wanted = normalise_remote(path)
        try:
            items = (await self.call(calls.files(wanted, limit=1))).get("items", [])
        except NotFound:
            return None
        return self._file_info(wanted, items)

    async def upload(
        self, local: Path, remote: str, on_progress: Progress | None = None, **options: Unpack[UploadOptions]
    ) -> dict[str, Any]:
        """Upload a local file to ``remote`` in the user's space, resumably (tus)."""
        run = self._upload(local, remote, on_progress, options)
        return await adrive(run.steps(), self.perform)

    async def upload_many(
        self,
        plan: list[tuple[Path, str]],
        *,
        parallel: int = 4,
        watcher: UploadWatcher | None = None,
        **options: Unpack[TransferOptions],
    ) -> tuple[list[dict[str, Any]], list[tuple[Path, ClientError]]]:
        """Upload the plan's (local file, remote path) pairs, ``parallel`` at a time, each resumably; the
        stored files (in plan order) and the failures."""
        check_options("upload_many", options, TransferOptions)
        watch = watcher or UploadWatcher()
        room = asyncio.Semaphore(max(1, parallel))

        async def one(index: int) -> dict[str, Any] | ClientError:
            local, remote = plan[index]
            async with room:
                watch.started(index, local, remote, local.stat().st_size)
                try:
                    moved = partial(watch.moved, index)
                    stored = await self.upload(local, remote, moved, on_note=watch.note, **options)
                except (ClientError, OSError) as exc:
                    error = exc if isinstance(exc, ClientError) else unreadable(local, exc)
                    watch.failed(index, error)
                    return error
                watch.finished(index, stored)
                return stored

        results = await asyncio.gather(*(one(i) for i in range(len(plan))))
        done = [r for r in results if not isinstance(r, ClientError)]
        failed = [(plan[i][0], r) for i, r in enumerate(results) if isinstance(r, ClientError)]
        return done, failed

    async def wait(self, job: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Read the job until it has ended (or ``timeout`` seconds have passed); the last job read."""
        return await adrive(waiting(job, timeout), self.perform)

    async def follow_log(self, job_id: str, reconnects: int = 5) -> AsyncIterator[SseEvent]:
        """The live log as server-sent events, ending with the ``end`` event; a dropped connection is
        resumed where it stopped."""
        where = LogFollow(reconnects)
        while True:
            error: ClientError | None = None
            try:
                call = calls.follow_log(job_id, where.params())
                async with self.stream(
                    call.method, call.path, params=call.params, headers=call.headers
                ) as resp:
                    parser = SseParser()
                    async for chunk in resp.aiter_text():
                        events, ended = where.take(parser, chunk)
                        for event in events:
                            yield event
                        if ended:
                            return
            except ClientError as exc:
                error = exc
            await asyncio.sleep(where.retry_delay(error))

    async def download(self, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        """Stream ``GET {path}`` into ``dest`` (through a temporary file renamed when complete)."""
        async with self.stream("GET", path, headers={"Accept": "*/*"}, follow_redirects=True) as resp:
            with PartialFile(dest) as part:
                async for chunk in resp.aiter_bytes(CHUNK):
                    part.write(chunk)
                    if on_progress:
                        on_progress(len(chunk))
                return part.commit()

    async def download_outputs(
        self,
        job_id: str,
        root: Path,
        on_progress: Progress | None = None,
        outputs: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Every output of the job (``outputs``, when they were just read) into ``root``, keeping its path,
        each checked by its SHA-256."""
        items = await self.call(calls.outputs(job_id)) if outputs is None else outputs
        address = partial(calls.output, job_id)
        return await adrive(downloading(items, root, address, on_progress), self.perform)
