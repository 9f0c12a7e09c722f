"""Projects in the typed clients: :class:`Projects` of :class:`~labcloud.client.Client` and its asyncio twin
:class:`AsyncProjects`; members and roles, join codes, quotas, quota requests and usage. What both need is
written once in :mod:`labcloud.client.projects`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labcloud.client import calls
from labcloud.client.common import ProjectList, QuotaList, RequestList, UsageRows
from labcloud.client.models import JoinCode, ProjectDetail, ProjectInfo, Quota, QuotaRequest, UsageRow
from labcloud.client.projects import Moment, Period, Role, UsageBy, is_email, member_id, moment

if TYPE_CHECKING:
    from labcloud.client.aclient import AsyncClient
    from labcloud.client.client import Client
    from labcloud.client.connection import Connection

__all__ = ["AsyncProjects", "Projects"]


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
