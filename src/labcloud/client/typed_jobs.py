"""Jobs in the typed clients: :class:`Job`, a job you can wait for, follow, cancel and download the outputs
of, and :class:`Jobs` (submit, get, list) of :class:`~labcloud.client.Client`; their asyncio twins
:class:`AsyncJob` and :class:`AsyncJobs` of :class:`~labcloud.client.AsyncClient`. What both need is
written once in :mod:`labcloud.client.jobs`."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from pydantic import PrivateAttr

from labcloud.client import calls
from labcloud.client.common import LocalPath, Paths, bind, outputs_target, waited
from labcloud.client.errors import check_options
from labcloud.client.jobs import JobFilters, SubmitOptions, filters_query, input_plan, submission_of
from labcloud.client.models import InputFile, JobEvent, JobInfo, OutputFile
from labcloud.client.progress import ShowProgress, download_progress

if TYPE_CHECKING:
    from labcloud.client.aclient import AsyncClient
    from labcloud.client.aconnection import AsyncConnection
    from labcloud.client.client import Client
    from labcloud.client.connection import Connection

__all__ = ["AsyncJob", "AsyncJobs", "Job", "Jobs"]


class Job(JobInfo):
    """A job of the server, that you can refresh, wait for, follow, cancel and download the outputs of.

    Its fields are the job as last read (:meth:`refresh`, :meth:`wait` and :meth:`cancel` read it again)."""

    _client: Client = PrivateAttr()

    @property
    def _connection(self) -> Connection:
        return self._client.connection

    def refresh(self) -> Job:
        """Read the job again; returns itself."""
        self.assign(self._connection.job(self.id))
        return self

    def wait(self, timeout: float | None = None, *, check: bool = False) -> Job:
        """Wait until the job has ended (succeeded, failed or cancelled); returns itself.

        :class:`~labcloud.client.errors.WaitTimeout` (a :class:`TimeoutError`) when ``timeout`` seconds
        pass first; with ``check=True``, :class:`~labcloud.client.errors.JobFailed` unless it succeeded."""
        ended = self._connection.wait({"id": self.id, "state": self.state}, timeout)
        if ended.keys() != {"id", "state"}:  # (nothing was read again when it had ended already)
            self.assign(ended)
        return waited(self, timeout, check)

    def logs(self, follow: bool = False) -> Iterator[str]:
        """The lines of the job's log; with ``follow=True`` also the lines still to come, as they come,
        until the job has ended."""
        if not follow:
            yield from self._connection.log(self.id).splitlines()
            return
        for event in self._connection.follow_log(self.id):
            if event.event == "log":
                yield from event.data

    def events(self) -> list[JobEvent]:
        """The job's history: every change of state, with when and why."""
        return [JobEvent.model_validate(e) for e in self._connection.events(self.id)]

    def input_files(self) -> list[InputFile]:
        """The files its inputs brought, with the checksum of the content it read."""
        return [InputFile.model_validate(i) for i in self._connection.call(calls.inputs(self.id))]

    def outputs(self) -> list[OutputFile]:
        """The job's output files (paths relative to its folder ``jobs/{id}/`` of your space)."""
        return [OutputFile.model_validate(o) for o in self._connection.outputs(self.id)]

    def download(
        self, dest: LocalPath | None = None, *, zip: bool = False, progress: ShowProgress = False
    ) -> Paths:
        """Download the outputs into the folder ``dest`` (default ``./{id}/``), keeping their paths, each
        checked by its SHA-256; or with ``zip=True`` all of them as one zip file ``dest`` (default
        ``./{id}.zip``). Returns the files written."""
        target = outputs_target(self, dest, zip)
        if zip:
            with download_progress(progress, target.name, None) as moved:
                self._connection.download_zip(self.id, target, moved)
            return [target]
        outputs = self._connection.outputs(self.id)
        total = sum(int(o["size"]) for o in outputs)
        with download_progress(progress, f"outputs of {self.id}", total) as moved:
            written = self._connection.download_outputs(self.id, target, moved, outputs=outputs)
        return [Path(item["local"]) for item in written]

    def cancel(self) -> Job:
        """Cancel the job: a queued one at once, a running one is stopped (``cancelling``, then
        ``cancelled``); returns itself."""
        self.assign(self._connection.cancel(self.id))
        return self

    def rerun(self, current_image: bool = False, current_inputs: bool = False) -> Job:
        """A new job with the same app, parameters and inputs: the exact content its inputs had, unless
        ``current_inputs`` (then what their paths hold now); a container job's with the image it ran,
        unless ``current_image`` (then the one its reference names now)."""
        return bind(Job, self._connection.rerun(self.id, current_image, current_inputs), self._client)

    def delete(self) -> None:
        """Delete the ended job, its history and log (its output files stay in your space)."""
        self._connection.call(calls.delete_job(self.id))


class Jobs:
    """Your jobs, and those of your projects: submit, get, list."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(self, app: str, **options: Unpack[SubmitOptions]) -> Job:
        """Start a job of ``app`` (a name, or ``APP:VERSION[:ENTRYPOINT]``; default the latest version and its
        default entrypoint, else ``version`` and ``entrypoint``) with ``params`` (checked against the
        entrypoint's schema) and ``inputs``: for each input slot a path of your space (a ``str``), or a local
        file (a :class:`~pathlib.Path`), uploaded to ``inputs/`` first (with bars if ``progress``). ``name``
        names it; ``resources`` overrides cpus, memory_mb, gpus or timeout_s; ``env`` sets the variables the
        entrypoint allows; ``tags`` are yours to filter by. ``project`` is the slug of a project where you
        are a member or more (its members see the job; :class:`~labcloud.client.errors.ValidationError` on
        ``project`` otherwise); by default the job goes to your personal project. With ``wait=True`` it
        returns once the job has ended, or ``timeout`` seconds have passed (see :meth:`Job.wait`)."""
        check_options("submit", options, SubmitOptions)
        paths, plan = input_plan(options.get("inputs") or {})
        for local, remote in plan:
            self._client.files.upload(
                local, to=posixpath.dirname(remote), progress=options.get("progress", False)
            )
        body = submission_of(app, paths, options)
        job = bind(Job, self._client.connection.submit(body), self._client)
        return job.wait(options.get("timeout")) if options.get("wait") else job

    def get(self, job_id: str) -> Job:
        """One of your jobs, or of your projects (:class:`~labcloud.client.errors.NotFound` if there is no
        such job you may see)."""
        return bind(Job, self._client.connection.job(str(job_id)), self._client)

    def list(self, **filters: Unpack[JobFilters]) -> Iterator[Job]:
        """Your jobs, newest first, all of them (page after page as you iterate): only in ``state`` (one or
        several), of ``app``, with every ``tag`` (``{"key": "value"}`` or ``"key=value"`` strings), created
        in a time range (``created_after``, ``created_before``). With ``project`` (a slug) the project's jobs
        instead, everyone's (:class:`~labcloud.client.errors.NotFound` unless you have a role in it).
        ``page_size`` jobs (at most 200, the default) are read at a time."""
        check_options("list", filters, JobFilters)
        query, page_size = filters_query(filters)
        pages = self._client.connection.pages("/jobs", query, page_size)
        return (bind(Job, item, self._client) for item in pages)


class AsyncJob(JobInfo):
    """A job of the server; the asyncio twin of :class:`labcloud.client.Job`."""

    _client: AsyncClient = PrivateAttr()

    @property
    def _connection(self) -> AsyncConnection:
        return self._client.connection

    async def refresh(self) -> AsyncJob:
        """Read the job again; returns itself."""
        self.assign(await self._connection.call(calls.job(self.id)))
        return self

    async def wait(self, timeout: float | None = None, *, check: bool = False) -> AsyncJob:
        """Wait until the job has ended; returns itself (see :meth:`labcloud.client.Job.wait`)."""
        ended = await self._connection.wait({"id": self.id, "state": self.state}, timeout)
        if ended.keys() != {"id", "state"}:  # (nothing was read again when it had ended already)
            self.assign(ended)
        return waited(self, timeout, check)

    async def logs(self, follow: bool = False) -> AsyncIterator[str]:
        """The lines of the job's log; with ``follow=True`` also those still to come, until it has ended."""
        if not follow:
            for line in str(await self._connection.call(calls.log(self.id))).splitlines():
                yield line
            return
        async for event in self._connection.follow_log(self.id):
            if event.event == "log":
                for line in event.data:
                    yield line

    async def events(self) -> list[JobEvent]:
        """The job's history: every change of state, with when and why."""
        return [JobEvent.model_validate(e) for e in await self._connection.call(calls.events(self.id))]

    async def input_files(self) -> list[InputFile]:
        """The files its inputs brought, with the checksum of the content it read."""
        return [InputFile.model_validate(i) for i in await self._connection.call(calls.inputs(self.id))]

    async def outputs(self) -> list[OutputFile]:
        """The job's output files (paths relative to its folder ``jobs/{id}/`` of your space)."""
        return [OutputFile.model_validate(o) for o in await self._connection.call(calls.outputs(self.id))]

    async def download(
        self, dest: LocalPath | None = None, *, zip: bool = False, progress: ShowProgress = False
    ) -> Paths:
        """Download the outputs into the folder ``dest`` (or, ``zip=True``, as one zip file); the files
        written (see :meth:`labcloud.client.Job.download`)."""
        target = outputs_target(self, dest, zip)
        if zip:
            with download_progress(progress, target.name, None) as moved:
                await self._connection.download(calls.outputs_zip(self.id), target, moved)
            return [target]
        outputs = await self._connection.call(calls.outputs(self.id))
        total = sum(int(o["size"]) for o in outputs)
        with download_progress(progress, f"outputs of {self.id}", total) as moved:
            written = await self._connection.download_outputs(self.id, target, moved, outputs)
        return [Path(item["local"]) for item in written]

    async def cancel(self) -> AsyncJob:
        """Cancel the job; returns itself."""
        self.assign(await self._connection.call(calls.cancel(self.id)))
        return self

    async def rerun(self, current_image: bool = False, current_inputs: bool = False) -> AsyncJob:
        """A new job with the same app, parameters and inputs: the exact content its inputs had, unless
        ``current_inputs`` (then what their paths hold now); a container job's with the image it ran,
        unless ``current_image`` (then the one its reference names now)."""
        call = calls.rerun(self.id, current_image, current_inputs)
        return bind(AsyncJob, await self._connection.call(call), self._client)

    async def delete(self) -> None:
        """Delete the ended job, its history and log (its output files stay in your space)."""
        await self._connection.call(calls.delete_job(self.id))


class AsyncJobs:
    """Your jobs, and those of your projects: submit, get, list."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(self, app: str, **options: Unpack[SubmitOptions]) -> AsyncJob:
        """Start a job (see :meth:`labcloud.client.Jobs.submit`)."""
        check_options("submit", options, SubmitOptions)
        paths, plan = input_plan(options.get("inputs") or {})
        for local, remote in plan:
            await self._client.files.upload(
                local, to=posixpath.dirname(remote), progress=options.get("progress", False)
            )
        body = submission_of(app, paths, options)
        job = bind(AsyncJob, await self._client.connection.call(calls.submit(body)), self._client)
        return await job.wait(options.get("timeout")) if options.get("wait") else job

    async def get(self, job_id: str) -> AsyncJob:
        """One of your jobs, or of your projects."""
        return bind(AsyncJob, await self._client.connection.call(calls.job(str(job_id))), self._client)

    def list(self, **filters: Unpack[JobFilters]) -> AsyncIterator[AsyncJob]:
        """Your jobs (or with ``project``, the project's), newest first, all of them, page after page (see
        :meth:`labcloud.client.Jobs.list`)."""
        check_options("list", filters, JobFilters)
        query, page_size = filters_query(filters)
        pages = self._client.connection.pages("/jobs", query, page_size)
        return (bind(AsyncJob, item, self._client) async for item in pages)
