"""The HTTP API of one labcloud server (``/api/v1``) as one user, answering in plain JSON data: what the
``labcloud`` commands use, and what :class:`labcloud.client.Client` turns into typed objects.

:class:`Connection` blocks; :class:`labcloud.client.aconnection.AsyncConnection` is its asynchronous twin.
Both send the requests described in :mod:`labcloud.client.calls` and raise a
:class:`~labcloud.client.errors.ClientError` (of the kind the status says, with the server's problem
details) for every answer that is not a success and every network failure. The requests about projects,
quotas and usage are :class:`~labcloud.client.connection_projects.ProjectRequests`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any, Unpack

import httpx

from labcloud.client import calls, uploads
from labcloud.client.connection_base import ConnectionBase, unreadable
from labcloud.client.connection_projects import ProjectRequests
from labcloud.client.downloads import CHUNK, PartialFile, downloading
from labcloud.client.errors import ClientError, NotFound, check_options
from labcloud.client.jobs import JobUpdate, waiting
from labcloud.client.sse import LogFollow, SseEvent, SseParser
from labcloud.client.steps import Download, FetchJob, Pause, drive
from labcloud.client.uploads import (
    Progress,
    TransferOptions,
    UploadCancelled,
    UploadOptions,
    UploadWatcher,
    normalise_remote,
)

__all__ = ["Connection"]

OnFile = Callable[[dict[str, Any]], None]  # called with each output before it is downloaded


class Connection(ConnectionBase, ProjectRequests):
    """The HTTP API of one labcloud server, as one user (bearer ``token``; optional for :meth:`login`)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, token, timeout=timeout)
        self._http = httpx.Client(**self._client_options())

    def close(self) -> None:
        self._http.close()

    def clone(self) -> Connection:
        """Another connection to the same server with the same token (one per thread for parallel work)."""
        return Connection(self.base_url, self.token, timeout=self.timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; any non-2xx answer or network failure raises :class:`ClientError`."""
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = self._http.request(method, self._url(path), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise ClientError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def call(self, call: calls.Call) -> Any:
        """Send a described request; its JSON, text, response or None, as the call says."""
        extra = {"timeout": call.timeout} if call.timeout is not None else {}
        response = self.request(call.method, call.path, headers=call.headers, **call.options(), **extra)
        return self._answer(call, response)

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (no read timeout); errors are raised before the body is handed out.

        With ``follow_redirects=True`` a redirect to another origin (a presigned S3 URL) is followed
        without the Authorization header."""
        headers = self._headers(kwargs.pop("headers", None))
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self._http.stream(
                method, self._url(path), headers=headers, timeout=timeout, **kwargs
            ) as resp:
                if resp.is_error:
                    resp.read()
                    raise ClientError.from_response(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def page(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of a cursor-paged listing: ``{"items": [...], "next_cursor": ...}``."""
        result: dict[str, Any] = self.json("GET", path, params=params)
        return result

    def pages(self, path: str, params: dict[str, Any], page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged listing, asking for ``page_size`` at a time and following
        ``next_cursor`` to the end."""
        query = {**params, "limit": page_size}
        while True:
            page = self.page(path, query)
            yield from page.get("items", [])
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def perform(self, step: Any, cancel: threading.Event | None = None) -> Any:
        """Carry out one step of work written as steps (:mod:`labcloud.client.steps`)."""
        if isinstance(step, Pause):
            if cancel is None:
                time.sleep(step.seconds)
            elif cancel.wait(step.seconds):
                raise UploadCancelled()
            return None
        if isinstance(step, FetchJob):
            return self.job(step.job_id)
        if isinstance(step, uploads.Create):
            return self.tus_create(step.remote, step.size).headers
        if isinstance(step, uploads.Offset):
            return self.tus_offset(step.url)
        if isinstance(step, uploads.Append):
            return self.tus_append(step.url, step.offset, step.data).headers
        if isinstance(step, uploads.Lookup):
            return self.file_info(step.remote)
        if isinstance(step, Download):
            return self.download(step.path, step.dest, step.on_progress)
        raise TypeError(f"not a step: {step!r}")

    # ------------------------------------------------------------------------------------------ account

    def login(self, email: str, password: str) -> str:
        """Log in with email and password; the short-lived token becomes this connection's token."""
        self.token = str(self.call(calls.login(email, password))["access_token"])
        return self.token

    def create_token(self, name: str, scopes: list[str]) -> dict[str, Any]:
        """A personal API token; the secret (``token``) is only in this answer."""
        result: dict[str, Any] = self.call(calls.create_token(name, scopes))
        return result

    def revoke_token(self, token_id: str) -> None:
        self.call(calls.revoke_token(token_id))

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.me())
        return result

    # ------------------------------------------------------------------------------------------ apps

    def apps(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(calls.apps()).get("items", [])
        return items

    def app(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.app(name))
        return result

    def app_images(self, name: str) -> dict[str, Any]:
        """Admin: the images of an app's container entrypoints, and which the server's engine holds."""
        result: dict[str, Any] = self.call(calls.app_images(name))
        return result

    def pull_images(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Admin: pull the images of a version (the latest by default); waits as long as the pulls take."""
        result: dict[str, Any] = self.call(calls.pull_images(name, version, self.timeout))
        return result

    # ------------------------------------------------------------------------------------------ files

    def upload(
        self,
        local: Path,
        remote: str,
        on_progress: Progress | None = None,
        *,
        cancel: threading.Event | None = None,
        **options: Unpack[UploadOptions],
    ) -> dict[str, Any]:
        """Upload a local file to ``remote`` in the user's space, resumably (tus); ``{path, size, sha256,
        local}`` of the stored file. See :class:`~labcloud.client.uploads.ResumableUpload`."""
        run = self._upload(local, remote, on_progress, options, cancel)
        return drive(run.steps(), lambda step: self.perform(step, cancel))

    def upload_many(
        self,
        plan: list[tuple[Path, str]],
        *,
        parallel: int = 4,
        watcher: UploadWatcher | None = None,
        **options: Unpack[TransferOptions],
    ) -> tuple[list[dict[str, Any]], list[tuple[Path, ClientError]]]:
        """Upload the plan's (local file, remote path) pairs, ``parallel`` at a time (a connection per
        thread), each resumably; the stored files (in plan order) and the failures. Ctrl-C stops the
        running uploads after their chunk and starts no more (they can be resumed)."""
        check_options("upload_many", options, TransferOptions)
        watch = watcher or UploadWatcher()
        done: dict[int, dict[str, Any]] = {}
        failed: dict[int, ClientError] = {}
        cancel = threading.Event()
        per_thread = threading.local()
        opened: list[Connection] = []
        opened_lock = threading.Lock()

        def own_connection() -> Connection:
            own: Connection | None = getattr(per_thread, "connection", None)
            if own is None:
                own = per_thread.connection = self.clone()
                with opened_lock:
                    opened.append(own)
            return own

        def one(index: int) -> dict[str, Any]:
            local, remote = plan[index]
            watch.started(index, local, remote, local.stat().st_size)
            moved = partial(watch.moved, index)
            return own_connection().upload(local, remote, moved, on_note=watch.note, cancel=cancel, **options)

        def outcome(index: int, future: Future[dict[str, Any]]) -> None:
            try:
                done[index] = future.result()
            except UploadCancelled:
                return
            except (ClientError, OSError) as exc:
                error = exc if isinstance(exc, ClientError) else unreadable(plan[index][0], exc)
                failed[index] = error
                watch.failed(index, error)
                return
            watch.finished(index, done[index])

        pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(plan))))
        futures = {pool.submit(one, i): i for i in range(len(plan))}
        try:
            for future in as_completed(futures):
                outcome(futures[future], future)
        except KeyboardInterrupt:
            cancel.set()  # running uploads stop after their chunk; the rest never start
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for own in opened:
                own.close()
        return [done[i] for i in sorted(done)], [(plan[i][0], failed[i]) for i in sorted(failed)]

    def tus_create(self, remote: str, size: int) -> httpx.Response:
        """Start a resumable upload of ``size`` bytes to ``remote``; its URL is the answer's Location."""
        response: httpx.Response = self.call(calls.tus_create(remote, size))
        return response

    def tus_offset(self, url: str) -> int:
        """How many bytes of the upload at ``url`` the server holds."""
        return int(self.call(calls.tus_offset(url)).headers["Upload-Offset"])

    def tus_append(self, url: str, offset: int, data: bytes) -> httpx.Response:
        """Send ``data`` at ``offset``, with its SHA-256 for the server to check."""
        response: httpx.Response = self.call(calls.tus_append(url, offset, data))
        return response

    def tus_cancel(self, url: str) -> None:
        self.call(calls.tus_cancel(url))

    def file_info(self, path: str) -> dict[str, Any] | None:
        """The file at ``path`` of the user's space (``{path, type, size, sha256, ...}``), ``{path, type:
        "folder"}`` for a folder, None when there is nothing."""
        wanted = normalise_remote(path)
        try:
            items = self.call(calls.files(wanted, limit=1)).get("items", [])
        except NotFound:
            return None
        return self._file_info(wanted, items)

    def files(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        return self.pages("/files", {"prefix": prefix} if prefix else {})

    # ------------------------------------------------------------------------------------------ jobs

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.submit(body))
        return result

    def jobs(self, params: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
        """Your jobs, newest first: one page of ``limit`` (at most 200), or all of them (``limit=None``)."""
        if limit is None:
            return {"items": list(self.pages("/jobs", params)), "next_cursor": None}
        return self.page("/jobs", {**params, "limit": limit})

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.job(job_id))
        return result

    def wait(
        self, job: dict[str, Any], timeout: float | None = None, on_update: JobUpdate | None = None
    ) -> dict[str, Any]:
        """Read the job until it has ended (or ``timeout`` seconds have passed); the last job read."""
        return drive(waiting(job, timeout, on_update), self.perform)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(calls.events(job_id))
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.cancel(job_id))
        return result

    def rerun(self, job_id: str, current_image: bool = False, current_inputs: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.rerun(job_id, current_image, current_inputs))
        return result

    def log(self, job_id: str, times: bool = False) -> str:
        return str(self.call(calls.log(job_id, times)))

    def follow_log(self, job_id: str, reconnects: int = 5) -> Iterator[SseEvent]:
        """The live log as server-sent events, ending with the ``end`` event. A dropped connection is
        resumed where it stopped (the event ids are byte offsets into the log)."""
        where = LogFollow(reconnects)
        while True:
            error: ClientError | None = None
            try:
                call = calls.follow_log(job_id, where.params())
                with self.stream(call.method, call.path, params=call.params, headers=call.headers) as resp:
                    parser = SseParser()
                    for chunk in resp.iter_text():
                        events, ended = where.take(parser, chunk)
                        yield from events
                        if ended:
                            return
            except ClientError as exc:
                error = exc
            time.sleep(where.retry_delay(error))  # then ask again from where it stopped

    def outputs(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(calls.outputs(job_id))
        return result

    def download(self, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        """Stream ``GET {path}`` into ``dest``, through a temporary file beside it that is renamed when
        complete, so ``dest`` never holds a partial file. Returns the number of bytes."""
        with (
            PartialFile(dest) as part,
            self.stream("GET", path, headers={"Accept": "*/*"}, follow_redirects=True) as resp,
        ):
            for chunk in resp.iter_bytes(CHUNK):
                part.write(chunk)
                if on_progress:
                    on_progress(len(chunk))
            return part.commit()

    def download_file(self, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        """A file of the user's space, or a folder as a zip."""
        return self.download(calls.file(path), dest, on_progress)

    def download_output(self, job_id: str, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        return self.download(calls.output(job_id, path), dest, on_progress)

    def download_outputs(
        self,
        job_id: str,
        root: Path,
        on_progress: Progress | None = None,
        on_file: OnFile | None = None,
        outputs: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Every output of the job (``outputs``, when they were just read) into ``root``, keeping its path,
        each checked by its SHA-256; ``{path, size, local}`` of each."""
        items = self.outputs(job_id) if outputs is None else outputs
        address = partial(calls.output, job_id)
        return drive(downloading(items, root, address, on_progress, on_file), self.perform)

    def download_zip(self, job_id: str, dest: Path, on_progress: Progress | None = None) -> int:
        return self.download(calls.outputs_zip(job_id), dest, on_progress)
