"""The asyncio twin of :mod:`labcloud.client.client`: :class:`AsyncClient` with its :class:`AsyncFiles`,
:class:`AsyncJobs` and :class:`AsyncProjects`, and :class:`AsyncJob`. The same methods and arguments; each
one that talks to the server is awaited, and listings and logs are iterated with ``async for``."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from labcloud.client import calls
from labcloud.client.aconnection import AsyncConnection
from labcloud.client.client import (
    LocalPath,
    Paths,
    ProjectList,
    QuotaList,
    RequestList,
    StoredFiles,
    UsageRows,
    bind,
    file_target,
    from_environment,
    no_such_file,
    outputs_target,
    upload_plan,
    uploaded,
    waited,
)
from labcloud.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, UploadState
from labcloud.client.connection import check_download
from labcloud.client.jobs import InputValue, input_plan, list_query, submission
from labcloud.client.models import (
    App,
    FileInfo,
    JobEvent,
    JobInfo,
    JoinCode,
    OutputFile,
    ProjectDetail,
    ProjectInfo,
    Quota,
    QuotaRequest,
    StorageUsage,
    UsageRow,
    User,
)
from labcloud.client.progress import ShowProgress, download_progress, upload_watcher
from labcloud.client.projects import Moment, Period, Role, UsageBy, is_email, member_id, moment

__all__ = ["AsyncClient", "AsyncFiles", "AsyncJob", "AsyncJobs", "AsyncProjects"]


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

    async def rerun(self, current_image: bool = False) -> AsyncJob:
        """A new job with the same app, parameters and inputs (a container job's with the image it ran,
        unless ``current_image``: then the one its reference names now)."""
        call = calls.rerun(self.id, current_image)
        return bind(AsyncJob, await self._connection.call(call), self._client)

    async def delete(self) -> None:
        """Delete the ended job, its history and log (its output files stay in your space)."""
        await self._connection.call(calls.delete_job(self.id))


class AsyncJobs:
    """Your jobs, and those of your projects: submit, get, list."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(
        self,
        app: str,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, InputValue] | None = None,
        version: str | None = None,
        entrypoint: str | None = None,
        name: str = "",
        tags: Mapping[str, str] | None = None,
        resources: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
        project: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        progress: ShowProgress = False,
    ) -> AsyncJob:
        """Start a job (see :meth:`labcloud.client.Jobs.submit`)."""
        paths, plan = input_plan(inputs or {})
        for local, remote in plan:
            await self._client.files.upload(local, to=posixpath.dirname(remote), progress=progress)
        body = submission(
            app,
            version=version,
            entrypoint=entrypoint,
            params=params,
            inputs=paths,
            name=name,
            tags=tags,
            resources=resources,
            env=env,
            project=project,
        )
        job = bind(AsyncJob, await self._client.connection.call(calls.submit(body)), self._client)
        return await job.wait(timeout) if wait else job

    async def get(self, job_id: str) -> AsyncJob:
        """One of your jobs, or of your projects."""
        return bind(AsyncJob, await self._client.connection.call(calls.job(str(job_id))), self._client)

    async def list(
        self,
        *,
        state: str | Iterable[str] | None = None,
        app: str | None = None,
        tag: Mapping[str, str] | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        project: str | None = None,
        page_size: int = 200,
    ) -> AsyncIterator[AsyncJob]:
        """Your jobs (or with ``project``, the project's), newest first, all of them, page after page (see
        :meth:`labcloud.client.Jobs.list`)."""
        query = list_query(state, app, tag, created_after, created_before, project)
        async for item in self._client.connection.pages("/jobs", query, page_size):
            yield bind(AsyncJob, item, self._client)


class AsyncProjects:
    """Your projects, their members, join codes, quotas and usage; the twin of
    :class:`labcloud.client.Projects`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _call(self, call: calls.Call) -> Any:
        return await self._client.connection.call(call)

    async def list(self) -> ProjectList:
        """Your projects with your role in each, your personal one first."""
        return [ProjectInfo.model_validate(p) for p in await self._call(calls.projects())]

    async def get(self, slug: str) -> ProjectDetail:
        """A project and its members."""
        return ProjectDetail.model_validate(await self._call(calls.project(slug)))

    async def create(self, name: str, slug: str | None = None, description: str = "") -> ProjectDetail:
        """A new project with you as its owner."""
        return ProjectDetail.model_validate(await self._call(calls.create_project(name, slug, description)))

    async def add_member(self, slug: str, email: str, role: Role = "member") -> ProjectDetail:
        """Give someone who has an account a role in the project."""
        return ProjectDetail.model_validate(await self._call(calls.add_member(slug, email, role)))

    async def set_role(self, slug: str, member: str, role: Role) -> ProjectDetail:
        """Change a member's role; ``member`` is their user id or email."""
        user_id = await self._member_id(slug, member)
        return ProjectDetail.model_validate(await self._call(calls.set_role(slug, user_id, role)))

    async def remove_member(self, slug: str, member: str) -> None:
        """Take a member (user id or email) out of the project."""
        await self._call(calls.remove_member(slug, await self._member_id(slug, member)))

    async def leave(self, slug: str) -> None:
        """Leave the project."""
        me = await self._call(calls.me())
        await self._call(calls.remove_member(slug, str(me["id"])))

    async def join_code(self, slug: str, days: int | None = None) -> JoinCode:
        """A new join code that works for ``days``; only this answer holds it."""
        return JoinCode.model_validate(await self._call(calls.join_code(slug, days)))

    async def drop_join_code(self, slug: str) -> None:
        """No join code works for the project any more."""
        await self._call(calls.drop_join_code(slug))

    async def join(self, code: str) -> ProjectDetail:
        """Join the project of a join code, as a member."""
        return ProjectDetail.model_validate(await self._call(calls.join(code)))

    async def quotas(self, slug: str) -> QuotaList:
        """The project's quotas with what is used, held and left, and their level."""
        return [Quota.model_validate(q) for q in await self._call(calls.quotas(slug))]

    async def request_more(self, slug: str, resource: str, amount: float, justification: str) -> QuotaRequest:
        """Ask the project's managers for ``amount`` more of one of its quotas, saying why."""
        found = await self._call(calls.request_quota(slug, resource, amount, justification))
        return QuotaRequest.model_validate(found)

    async def requests(self, slug: str) -> RequestList:
        """The project's quota requests and their decisions, newest first."""
        return [QuotaRequest.model_validate(r) for r in await self._call(calls.quota_requests(slug))]

    async def approve(self, slug: str, request_id: str, note: str = "") -> QuotaRequest:
        """Approve a pending request: the quota's limit grows by its amount."""
        return QuotaRequest.model_validate(await self._call(calls.decide(slug, request_id, "approve", note)))

    async def reject(self, slug: str, request_id: str, note: str = "") -> QuotaRequest:
        """Reject a pending request, with a note for whoever asked."""
        return QuotaRequest.model_validate(await self._call(calls.decide(slug, request_id, "reject", note)))

    async def usage(
        self, slug: str, by: UsageBy = "user", since: Moment | None = None, until: Moment | None = None
    ) -> UsageRows:
        """What the project's ended job attempts used in [since, until), a row per user, app, executor or
        month (``row.key``)."""
        found = await self._call(calls.usage(slug, by, moment(since), moment(until)))
        return [UsageRow.model_validate(row) for row in found["rows"]]

    async def set_quota(
        self,
        slug: str,
        resource: str,
        limit: float,
        period: Period = "monthly",
        starts_at: Moment | None = None,
        ends_at: Moment | None = None,
    ) -> QuotaList:
        """Admins: set (or make) the project's quota of ``resource``; the project's quotas after."""
        call = calls.set_quota(slug, resource, limit, period, moment(starts_at), moment(ends_at))
        return [Quota.model_validate(q) for q in await self._call(call)]

    async def remove_quota(self, slug: str, resource: str) -> None:
        """Admins: the project has no quota of ``resource`` any more."""
        await self._call(calls.remove_quota(slug, resource))

    async def _member_id(self, slug: str, member: str) -> str:
        if not is_email(member):
            return member
        return member_id(await self._call(calls.project(slug)), member)


class AsyncFiles:
    """Your file space: list, upload (resumable), download, move, delete."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, prefix: str = "") -> AsyncIterator[FileInfo]:
        """The files and folders of a folder of your space (default the top), by name, all pages."""
        async for item in self._client.connection.pages("/files", {"prefix": prefix} if prefix else {}):
            yield FileInfo.model_validate(item)

    async def info(self, path: str) -> FileInfo | None:
        """The file at ``path``, a folder (``type`` folder), or None."""
        found = await self._client.connection.file_info(path)
        return None if found is None else FileInfo.model_validate({"size": 0, **found})

    async def upload(
        self,
        paths: LocalPath | Sequence[LocalPath],
        to: str = "",
        *,
        progress: ShowProgress = False,
        parallel: int = 4,
        chunk_size: int = UPLOAD_CHUNK,
        retries: int = UPLOAD_RETRIES,
        resume: bool = True,
    ) -> StoredFiles:
        """Upload files or folders into the folder ``to`` of your space, resumably (see
        :meth:`labcloud.client.Files.upload`)."""
        plan = upload_plan(paths, to)
        urls = UploadState() if resume else None
        with upload_watcher(progress, plan) as watcher:
            done, failed = await self._client.connection.upload_many(
                plan, parallel=parallel, chunk_size=chunk_size, retries=retries, urls=urls, watcher=watcher
            )
        return uploaded(done, failed)

    async def download(
        self, path: str, dest: LocalPath | None = None, *, progress: ShowProgress = False
    ) -> Path:
        """Download a file (checked by its SHA-256) or a folder (as a zip) of your space to ``dest``."""
        info = await self._client.connection.file_info(path)
        if info is None:
            raise no_such_file(path)
        target = file_target(info, dest)
        with download_progress(progress, target.name, info.get("size")) as moved:
            await self._client.connection.download(calls.file(str(info["path"])), target, moved)
        check_download(target, str(info["path"]), info.get("sha256"))
        return target

    async def move(self, source: str, destination: str) -> FileInfo:
        """Move or rename a file or folder; ``destination`` must not exist yet."""
        return FileInfo.model_validate(
            await self._client.connection.call(calls.move_file(source, destination))
        )

    async def delete(self, path: str) -> None:
        """Delete a file, or a folder with everything in it."""
        await self._client.connection.call(calls.delete_file(path))

    async def usage(self) -> StorageUsage:
        """How much of your storage limit you use."""
        return StorageUsage.model_validate(await self._client.connection.call(calls.storage_usage()))


class AsyncClient:
    """A labcloud server, as one user, for asyncio code (``async with AsyncClient.from_env() as client``);
    the twin of :class:`labcloud.client.Client`. Many requests may run at once (``asyncio.gather``)."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.connection = AsyncConnection(server, token, timeout=timeout)
        self.files = AsyncFiles(self)
        self.jobs = AsyncJobs(self)
        self.projects = AsyncProjects(self)

    @classmethod
    def from_env(cls, server: str | None = None, *, timeout: float = 30.0) -> AsyncClient:
        """The server and token ``labcloud login`` stored, or ``LABCLOUD_SERVER`` and ``LABCLOUD_TOKEN``."""
        found_server, token = from_environment(server)
        return cls(found_server, token, timeout=timeout)

    @classmethod
    async def login(cls, server: str, email: str, password: str, *, timeout: float = 30.0) -> AsyncClient:
        """Log in with email and password; the client holds a short-lived login token."""
        client = cls(server, timeout=timeout)
        try:
            answer = await client.connection.call(calls.login(email, password))
        except BaseException:
            await client.aclose()
            raise
        client.connection.token = str(answer["access_token"])
        return client

    @property
    def server(self) -> str:
        return self.connection.base_url

    async def aclose(self) -> None:
        await self.connection.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.server!r})"

    async def me(self) -> User:
        """Your account."""
        return User.model_validate(await self.connection.call(calls.me()))

    async def apps(self) -> list[App]:
        """The apps you can run, with their versions, entrypoints, parameter schemas and inputs."""
        return [App.model_validate(a) for a in (await self.connection.call(calls.apps())).get("items", [])]

    async def app(self, name: str) -> App:
        """One app."""
        return App.model_validate(await self.connection.call(calls.app(name)))
