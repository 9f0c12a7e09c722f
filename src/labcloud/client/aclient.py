"""The asyncio twin of :mod:`labcloud.client.client`: :class:`AsyncClient` with its
:class:`~labcloud.client.typed_files.AsyncFiles`, :class:`~labcloud.client.typed_jobs.AsyncJobs` and
:class:`~labcloud.client.typed_projects.AsyncProjects`, and :class:`~labcloud.client.typed_jobs.AsyncJob`.
The same methods and arguments; each one that talks to the server is awaited, and listings and logs are
iterated with ``async for``."""

from __future__ import annotations

from labcloud.client import calls
from labcloud.client.aconnection import AsyncConnection
from labcloud.client.common import from_environment
from labcloud.client.models import App, User
from labcloud.client.typed_files import AsyncFiles as AsyncFiles
from labcloud.client.typed_jobs import AsyncJob as AsyncJob
from labcloud.client.typed_jobs import AsyncJobs as AsyncJobs
from labcloud.client.typed_projects import AsyncProjects as AsyncProjects

__all__ = ["AsyncClient", "AsyncFiles", "AsyncJob", "AsyncJobs", "AsyncProjects"]


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
