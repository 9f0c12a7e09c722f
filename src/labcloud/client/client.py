"""The Python client: :class:`Client`, its :class:`Files`, :class:`Jobs` and :class:`Projects`, and
:class:`Job`, a job you can wait for, follow, and download the outputs of. :mod:`labcloud.client.aclient`
is its asyncio twin."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from pydantic import PrivateAttr

from labcloud.client import calls
from labcloud.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, ClientConfig, UploadState, resolve
from labcloud.client.connection import Connection, check_download
from labcloud.client.errors import ClientError, JobFailed, NotFound, NotLoggedIn, WaitTimeout
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
    StoredFile,
    UsageRow,
    User,
)
from labcloud.client.progress import ShowProgress, download_progress, upload_watcher
from labcloud.client.projects import Moment, Period, Role, UsageBy, is_email, member_id, moment
from labcloud.client.uploads import plan_uploads

__all__ = ["Client", "Files", "Job", "Jobs", "Projects"]

LocalPath = str | PathLike[str]
# (named, because in the classes below ``list`` is a method's name)
StoredFiles = list[StoredFile]
ProjectList = list[ProjectInfo]
QuotaList = list[Quota]
RequestList = list[QuotaRequest]
UsageRows = list[UsageRow]
Paths = list[Path]
M = TypeVar("M", bound=JobInfo)


# ------------------------------------------------------------------------------- shared by both clients


def from_environment(server: str | None) -> tuple[str, str]:
    """The server and token: ``server`` or ``LABCLOUD_SERVER`` or the stored login's; ``LABCLOUD_TOKEN`` or
    the token ``labcloud login`` stored for that server."""
    target = resolve(ClientConfig.load(), server)
    if not target.token:
        raise NotLoggedIn(0, f"not logged in to {target.server}: run labcloud login, or set LABCLOUD_TOKEN")
    return target.server, target.token


def upload_plan(paths: LocalPath | Sequence[LocalPath], to: str) -> list[tuple[Path, str]]:
    items = [paths] if isinstance(paths, str | PathLike) else list(paths)
    plan = plan_uploads(items, to)
    if not plan:
        raise FileNotFoundError("nothing to upload (the folders are empty)")
    return plan


def uploaded(done: list[dict[str, Any]], failed: list[tuple[Path, ClientError]]) -> StoredFiles:
    """The stored files; the first failure is raised (the other files are stored all the same)."""
    if failed:
        raise failed[0][1]
    return [StoredFile.model_validate(item) for item in done]


def file_target(info: dict[str, Any], dest: LocalPath | None) -> Path:
    """Where a download of the file (or folder, as NAME.zip) ``info`` goes: ``dest``, or into ``dest``
    when it is a folder, or into the current folder."""
    name = str(info["path"]).rsplit("/", 1)[-1] + ("" if info.get("type") == "file" else ".zip")
    target = Path(dest) if dest is not None else Path(name)
    return target / name if target.is_dir() else target


def outputs_target(job: JobInfo, dest: LocalPath | None, as_zip: bool) -> Path:
    if not as_zip:
        return Path(dest) if dest is not None else Path(job.id)
    target = Path(dest) if dest is not None else Path(f"{job.id}.zip")
    return target / f"{job.id}.zip" if target.is_dir() else target


def no_such_file(path: str) -> NotFound:
    return NotFound(404, f"you have no file or folder '{path}'")


def waited(job: M, timeout: float | None, check: bool) -> M:
    if not job.ended:
        raise WaitTimeout(job, timeout or 0)
    if check and not job.succeeded:
        raise JobFailed(job)
    return job


def bind(model: type[M], data: dict[str, Any], client: Any) -> M:
    job = model.model_validate(data)
    job._client = client  # type: ignore[attr-defined]
    return job


# ----------------------------------------------------------------------------------------------- jobs


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

    def rerun(self, current_image: bool = False) -> Job:
        """A new job with the same app, parameters and inputs (a container job's with the image it ran,
        unless ``current_image``: then the one its reference names now)."""
        return bind(Job, self._connection.rerun(self.id, current_image), self._client)

    def delete(self) -> None:
        """Delete the ended job, its history and log (its output files stay in your space)."""
        self._connection.call(calls.delete_job(self.id))


class Jobs:
    """Your jobs, and those of your projects: submit, get, list."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
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
    ) -> Job:
        """Start a job of ``app`` (a name, or ``APP:VERSION[:ENTRYPOINT]``; default the latest version and its
        default entrypoint) with ``params`` (checked against the entrypoint's schema) and ``inputs``: for each
        input slot a path of your space (a ``str``), or a local file (a :class:`~pathlib.Path`), uploaded to
        ``inputs/`` first. ``resources`` overrides cpus, memory_mb, gpus or timeout_s; ``tags`` are yours to
        filter by. ``project`` is the slug of a project where you are a member or more (its members see the
        job; :class:`~labcloud.client.errors.ValidationError` on ``project`` otherwise); by default the job
        goes to your personal project. With ``wait=True`` it returns once the job has ended (see
        :meth:`Job.wait`)."""
        paths, plan = input_plan(inputs or {})
        for local, remote in plan:
            self._client.files.upload(local, to=posixpath.dirname(remote), progress=progress)
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
        job = bind(Job, self._client.connection.submit(body), self._client)
        return job.wait(timeout) if wait else job

    def get(self, job_id: str) -> Job:
        """One of your jobs, or of your projects (:class:`~labcloud.client.errors.NotFound` if there is no
        such job you may see)."""
        return bind(Job, self._client.connection.job(str(job_id)), self._client)

    def list(
        self,
        *,
        state: str | Iterable[str] | None = None,
        app: str | None = None,
        tag: Mapping[str, str] | Iterable[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        project: str | None = None,
        page_size: int = 200,
    ) -> Iterator[Job]:
        """Your jobs, newest first, all of them (page after page as you iterate): only in ``state`` (one or
        several), of ``app``, with every ``tag`` (``{"key": "value"}`` or ``"key=value"`` strings), created
        in a time range. With ``project`` (a slug) the project's jobs instead, everyone's
        (:class:`~labcloud.client.errors.NotFound` unless you have a role in it). ``page_size`` jobs (at
        most 200) are read at a time."""
        query = list_query(state, app, tag, created_after, created_before, project)
        for item in self._client.connection.pages("/jobs", query, page_size):
            yield bind(Job, item, self._client)


# -------------------------------------------------------------------------------------------- projects


class Projects:
    """Your projects, the lab groups whose members share jobs: list, read, create; members and their
    roles, join codes, joining and leaving; their quotas, asking for more and deciding, and what they
    used.

    Roles rank viewer (reads the project's jobs) < member (runs jobs in it) < manager (adds viewers and
    members, hands out join codes, cancels anyone's jobs there) < owner (anything, managers and owners
    too). A project you have no role in does not exist for you
    (:class:`~labcloud.client.errors.NotFound`); one where your role is too low for what you ask answers
    :class:`~labcloud.client.errors.Forbidden`. ``"personal"`` names your personal project."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def _connection(self) -> Connection:
        return self._client.connection

    def list(self) -> ProjectList:
        """Your projects with your role in each, your personal one first."""
        return [ProjectInfo.model_validate(p) for p in self._connection.projects()]

    def get(self, slug: str) -> ProjectDetail:
        """A project and its members."""
        return ProjectDetail.model_validate(self._connection.project(slug))

    def create(self, name: str, slug: str | None = None, description: str = "") -> ProjectDetail:
        """A new project with you as its owner. ``slug`` (3 to 40 lower-case letters, digits and inner
        hyphens) is made from the name unless given; :class:`~labcloud.client.errors.Conflict` when it is
        taken."""
        return ProjectDetail.model_validate(self._connection.create_project(name, slug, description))

    def add_member(self, slug: str, email: str, role: Role = "member") -> ProjectDetail:
        """Give someone who has an account a role in the project (managers: viewer or member; owners: any
        role); the project with its members."""
        return ProjectDetail.model_validate(self._connection.add_member(slug, email, role))

    def set_role(self, slug: str, member: str, role: Role) -> ProjectDetail:
        """Change a member's role; ``member`` is their user id or email. A project keeps an owner
        (:class:`~labcloud.client.errors.Conflict`)."""
        user_id = self._member_id(slug, member)
        return ProjectDetail.model_validate(self._connection.set_role(slug, user_id, role))

    def remove_member(self, slug: str, member: str) -> None:
        """Take a member (user id or email) out of the project; their jobs stay in it."""
        self._connection.remove_member(slug, self._member_id(slug, member))

    def leave(self, slug: str) -> None:
        """Leave the project (its last owner cannot: make someone else owner first)."""
        self._connection.remove_member(slug, str(self._connection.me()["id"]))

    def join_code(self, slug: str, days: int | None = None) -> JoinCode:
        """A new join code (managers) that works for ``days`` (default: the server's, two weeks); the
        previous one stops working. Only this answer holds the code."""
        return JoinCode.model_validate(self._connection.join_code(slug, days))

    def drop_join_code(self, slug: str) -> None:
        """No join code works for the project any more."""
        self._connection.drop_join_code(slug)

    def join(self, code: str) -> ProjectDetail:
        """Join the project of a join code, as a member (a member already keeps their role);
        :class:`~labcloud.client.errors.NotFound` when the code is not valid (any more)."""
        return ProjectDetail.model_validate(self._connection.join_project(code))

    def quotas(self, slug: str) -> QuotaList:
        """The project's quotas: each resource's limit, what ended jobs ``used`` this period, what
        unfinished jobs hold (``reserved``), what is ``left`` and the ``level`` (ok, warning from 80%,
        exceeded). A project with none has no limit but the server's capacity."""
        return [Quota.model_validate(q) for q in self._connection.quotas(slug)]

    def request_more(self, slug: str, resource: str, amount: float, justification: str) -> QuotaRequest:
        """Ask the project's managers for ``amount`` more of one of its quotas, saying why (10 to 5000
        characters); a :class:`~labcloud.client.errors.ValidationError` names every bad field. Members
        (and more) may ask."""
        return QuotaRequest.model_validate(
            self._connection.request_quota(slug, resource, amount, justification)
        )

    def requests(self, slug: str) -> RequestList:
        """The project's quota requests and their decisions, newest first."""
        return [QuotaRequest.model_validate(r) for r in self._connection.quota_requests(slug)]

    def approve(self, slug: str, request_id: str, note: str = "") -> QuotaRequest:
        """Approve a pending request (managers, owners, admins): the quota's limit grows by its amount.
        :class:`~labcloud.client.errors.Conflict` when it was decided already."""
        return QuotaRequest.model_validate(self._connection.decide(slug, request_id, True, note))

    def reject(self, slug: str, request_id: str, note: str = "") -> QuotaRequest:
        """Reject a pending request, with a note for whoever asked."""
        return QuotaRequest.model_validate(self._connection.decide(slug, request_id, False, note))

    def usage(
        self, slug: str, by: UsageBy = "user", since: Moment | None = None, until: Moment | None = None
    ) -> UsageRows:
        """What the project's ended job attempts used in [since, until), a row per user (email), app,
        executor or month (``row.key``); biggest CPU-hours first, months in order. A datetime without a
        time zone is UTC, a date its first moment in UTC."""
        found = self._connection.usage(slug, by, moment(since), moment(until))
        return [UsageRow.model_validate(row) for row in found["rows"]]

    def set_quota(
        self,
        slug: str,
        resource: str,
        limit: float,
        period: Period = "monthly",
        starts_at: Moment | None = None,
        ends_at: Moment | None = None,
    ) -> QuotaList:
        """Admins: set (or make) the project's quota of ``resource`` (cpu_hours, gpu_hours,
        concurrent_jobs, jobs_per_day): its limit and period (monthly, daily, none; or allocation, from
        ``starts_at`` until before ``ends_at``). What was used this period stays. The project's quotas
        after."""
        found = self._connection.set_quota(slug, resource, limit, period, moment(starts_at), moment(ends_at))
        return [Quota.model_validate(q) for q in found]

    def remove_quota(self, slug: str, resource: str) -> None:
        """Admins: the project has no quota of ``resource`` any more."""
        self._connection.remove_quota(slug, resource)

    def _member_id(self, slug: str, member: str) -> str:
        return member_id(self._connection.project(slug), member) if is_email(member) else member


# ----------------------------------------------------------------------------------------------- files


class Files:
    """Your file space: list, upload (resumable), download, move, delete."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, prefix: str = "") -> Iterator[FileInfo]:
        """The files and folders of a folder of your space (default the top), by name, all pages."""
        for item in self._client.connection.files(prefix):
            yield FileInfo.model_validate(item)

    def info(self, path: str) -> FileInfo | None:
        """The file at ``path`` (``type`` file, with size and SHA-256), a folder (``type`` folder) or None."""
        found = self._client.connection.file_info(path)
        return None if found is None else FileInfo.model_validate({"size": 0, **found})

    def upload(
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
        """Upload files or folders (a folder keeps its name and layout) into the folder ``to`` of your
        space; the stored files, each checked by SHA-256.

        Uploads are resumable: after a network failure each file goes on where it stopped (``retries``
        failures in a row end it), and with ``resume`` an upload that was interrupted (a crash, a
        restarted notebook) continues when it is run again. ``progress=True`` shows bars; a function is
        called with (bytes done, total)."""
        plan = upload_plan(paths, to)
        urls = UploadState() if resume else None
        with upload_watcher(progress, plan) as watcher:
            done, failed = self._client.connection.upload_many(
                plan, parallel=parallel, chunk_size=chunk_size, retries=retries, urls=urls, watcher=watcher
            )
        return uploaded(done, failed)

    def download(self, path: str, dest: LocalPath | None = None, *, progress: ShowProgress = False) -> Path:
        """Download a file (checked by its SHA-256) or a folder (as a zip) of your space to ``dest`` (a
        file, or a folder to put it in; default the current folder); returns the file written."""
        info = self._client.connection.file_info(path)
        if info is None:
            raise no_such_file(path)
        target = file_target(info, dest)
        with download_progress(progress, target.name, info.get("size")) as moved:
            self._client.connection.download_file(str(info["path"]), target, moved)
        check_download(target, str(info["path"]), info.get("sha256"))
        return target

    def move(self, source: str, destination: str) -> FileInfo:
        """Move or rename a file or folder; ``destination`` must not exist yet."""
        return FileInfo.model_validate(self._client.connection.call(calls.move_file(source, destination)))

    def delete(self, path: str) -> None:
        """Delete a file, or a folder with everything in it."""
        self._client.connection.call(calls.delete_file(path))

    def usage(self) -> StorageUsage:
        """How much of your storage limit you use."""
        return StorageUsage.model_validate(self._client.connection.call(calls.storage_usage()))


# ----------------------------------------------------------------------------------------------- client


class Client:
    """A labcloud server, as one user.

    ``Client(server, token)`` with a personal API token (``lc_...``), :meth:`from_env` for the login of
    ``labcloud login`` (or ``LABCLOUD_SERVER`` and ``LABCLOUD_TOKEN``), :meth:`login` with a password.
    Use it in a ``with`` block, or :meth:`close` it. Every failed request raises a
    :class:`~labcloud.client.errors.ClientError` of the kind the answer says (:class:`NotFound`,
    :class:`ValidationError`, ...), with the server's problem details."""

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.connection = Connection(server, token, timeout=timeout)
        """The plain HTTP API (JSON data), for what the client has no method of its own for."""
        self.files = Files(self)
        self.jobs = Jobs(self)
        self.projects = Projects(self)

    @classmethod
    def from_env(cls, server: str | None = None, *, timeout: float = 30.0) -> Client:
        """The server and token ``labcloud login`` stored; ``LABCLOUD_SERVER`` and ``LABCLOUD_TOKEN`` win
        over them (``server`` over both). :class:`~labcloud.client.errors.NotLoggedIn` without a token."""
        found_server, token = from_environment(server)
        return cls(found_server, token, timeout=timeout)

    @classmethod
    def login(cls, server: str, email: str, password: str, *, timeout: float = 30.0) -> Client:
        """Log in with email and password; the client holds a short-lived login token."""
        client = cls(server, timeout=timeout)
        try:
            client.connection.login(email, password)
        except BaseException:
            client.close()
            raise
        return client

    @property
    def server(self) -> str:
        return self.connection.base_url

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.server!r})"

    def me(self) -> User:
        """Your account."""
        return User.model_validate(self.connection.me())

    def apps(self) -> list[App]:
        """The apps you can run, with their versions, entrypoints, parameter schemas and inputs."""
        return [App.model_validate(a) for a in self.connection.apps()]

    def app(self, name: str) -> App:
        """One app (:class:`~labcloud.client.errors.NotFound` if there is none of that name)."""
        return App.model_validate(self.connection.app(name))
