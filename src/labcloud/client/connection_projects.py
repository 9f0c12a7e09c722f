"""The requests about projects (members, join codes), their quotas and usage, as methods of the blocking
:class:`~labcloud.client.connection.Connection`: each one request, answering plain JSON data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from labcloud.client import calls


class ProjectRequests(ABC):
    """Projects, quotas and usage, each method one request (:mod:`labcloud.client.calls`) made through
    the connection's own :meth:`call`."""

    @abstractmethod
    def call(self, call: calls.Call) -> Any:
        """Make one request and answer its JSON (the connection's)."""

    def projects(self) -> list[dict[str, Any]]:
        """Your projects with your role in each, your personal one first."""
        result: list[dict[str, Any]] = self.call(calls.projects())
        return result

    def project(self, slug: str) -> dict[str, Any]:
        """A project with its members."""
        result: dict[str, Any] = self.call(calls.project(slug))
        return result

    def create_project(self, name: str, slug: str | None = None, description: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.create_project(name, slug, description))
        return result

    def add_member(self, slug: str, email: str, role: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.add_member(slug, email, role))
        return result

    def set_role(self, slug: str, user_id: str, role: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.set_role(slug, user_id, role))
        return result

    def remove_member(self, slug: str, user_id: str) -> None:
        """Take a member out of a project; with your own id, leave it."""
        self.call(calls.remove_member(slug, user_id))

    def join_code(self, slug: str, days: int | None = None) -> dict[str, Any]:
        """A new join code (``{code, expires_at}``); only this answer holds it."""
        result: dict[str, Any] = self.call(calls.join_code(slug, days))
        return result

    def drop_join_code(self, slug: str) -> None:
        self.call(calls.drop_join_code(slug))

    def join_project(self, code: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.join(code))
        return result

    # ------------------------------------------------------------------------------------ quotas, usage

    def quotas(self, slug: str) -> list[dict[str, Any]]:
        """A project's quotas with what is used, held and left, and their level."""
        result: list[dict[str, Any]] = self.call(calls.quotas(slug))
        return result

    def set_quota(
        self,
        slug: str,
        resource: str,
        limit: float,
        period: str = "monthly",
        starts_at: str | None = None,
        ends_at: str | None = None,
    ) -> list[dict[str, Any]]:
        """Admins: set a quota; the project's quotas after."""
        result: list[dict[str, Any]] = self.call(
            calls.set_quota(slug, resource, limit, period, starts_at, ends_at)
        )
        return result

    def remove_quota(self, slug: str, resource: str) -> None:
        self.call(calls.remove_quota(slug, resource))

    def request_quota(self, slug: str, resource: str, amount: float, justification: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(calls.request_quota(slug, resource, amount, justification))
        return result

    def quota_requests(self, slug: str) -> list[dict[str, Any]]:
        """A project's quota requests and their decisions, newest first."""
        result: list[dict[str, Any]] = self.call(calls.quota_requests(slug))
        return result

    def decide(self, slug: str, request_id: str, approve: bool, note: str = "") -> dict[str, Any]:
        """Approve (the limit grows by the amount asked for) or reject a pending request."""
        result: dict[str, Any] = self.call(
            calls.decide(slug, request_id, "approve" if approve else "reject", note)
        )
        return result

    def usage(
        self, slug: str, by: str = "user", since: str | None = None, until: str | None = None
    ) -> dict[str, Any]:
        """A project's usage report: ``{by, rows}``, each row with the ``by`` column."""
        result: dict[str, Any] = self.call(calls.usage(slug, by, since, until))
        return result

    def usage_csv(
        self, slug: str, by: str = "user", since: str | None = None, until: str | None = None
    ) -> str:
        """The same report as CSV, a header first."""
        return str(self.call(calls.usage(slug, by, since, until, csv=True)))
