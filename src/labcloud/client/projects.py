"""What working with projects needs, written once for the sync and the async client and the command line:
the roles, finding a member by email (the API names members by user id), and the moments a usage report
or an allocation is given."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from labcloud.client.errors import NotFound

Role = Literal["owner", "manager", "member", "viewer"]  # highest first
UsageBy = Literal["user", "app", "executor", "month"]
Period = Literal["monthly", "daily", "allocation", "none"]
Moment = datetime | date | str


def member_id(project: Mapping[str, Any], who: str) -> str:
    """The user id of the project's member ``who``: an email (compared without regard to case) or a user
    id. :class:`~labcloud.client.errors.NotFound` when nobody of the project is ``who``."""
    wanted = who.strip().lower()
    for member in project.get("members") or []:
        if wanted in (str(member.get("email", "")).lower(), str(member.get("user_id", "")).lower()):
            return str(member["user_id"])
    raise NotFound(404, f"{who} is no member of project {project.get('slug', '')!r}.")


def is_email(who: str) -> bool:
    """An email rather than a user id (a UUID has no ``@``)."""
    return "@" in who


def moment(value: Moment | None) -> str | None:
    """A moment for the API (ISO 8601 with its time zone): a datetime without one is taken as UTC, a date
    as its first moment in UTC; a string is sent as it is."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
