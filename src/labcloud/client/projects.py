"""What working with projects needs, written once for the sync and the async client and the command line:
the roles, and finding a member by email (the API names members by user id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from labcloud.client.errors import NotFound

Role = Literal["owner", "manager", "member", "viewer"]  # highest first


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
