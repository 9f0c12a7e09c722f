"""The Python client: :class:`Client`, with its :class:`~labcloud.client.typed_files.Files`,
:class:`~labcloud.client.typed_jobs.Jobs` and :class:`~labcloud.client.typed_projects.Projects`, and
:class:`~labcloud.client.typed_jobs.Job`, a job you can wait for, follow, and download the outputs of.
:mod:`labcloud.client.aclient` is its asyncio twin."""

from __future__ import annotations

from labcloud.client.common import from_environment
from labcloud.client.connection import Connection
from labcloud.client.models import App, User
from labcloud.client.typed_files import Files as Files
from labcloud.client.typed_jobs import Job as Job
from labcloud.client.typed_jobs import Jobs as Jobs
from labcloud.client.typed_projects import Projects as Projects
from labcloud.client.typed_sessions import Sessions
from labcloud.client.typed_sweeps import Sweeps

__all__ = ["Client", "Files", "Job", "Jobs", "Projects"]


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
        self.sessions = Sessions(self)
        self.sweeps = Sweeps(self)

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
