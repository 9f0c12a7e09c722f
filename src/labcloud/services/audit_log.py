"""Reading the audit log: filters (actor, action, target, since, until), newest first, in cursor pages.

Filters arrive as the text a person or a script typed; every bad one is named in one 422."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from labcloud.db.models import AuditEvent
from labcloud.errors import InvalidInput
from labcloud.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, decode_cursor, paginate

ACTION = re.compile(r"^[a-z_]+(\.[a-z_]+)?$")
TARGET_KINDS = ("user", "token", "project", "quota", "file", "job", "worker", "maintenance", "backup")
MAX_FILTER = 320


@dataclass
class AuditFilter:
    actor: str | None = None  # a user id, an e-mail, or a label such as cli:root
    action: str | None = None  # an action (login.failed) or its family (login)
    target_kind: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_PAGE_SIZE


def _time(text: str, loc: str, errors: list[dict[str, Any]]) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        errors.append({"loc": ["query", loc], "msg": "a date or time in ISO 8601, e.g. 2026-12-01T09:00Z"})
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_filter(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    limit: str | None = None,
) -> AuditFilter:
    """The filters as given (empty ones ignored); InvalidInput naming every bad one at once."""
    errors: list[dict[str, Any]] = []
    found = AuditFilter()
    given = {"actor": actor, "action": action, "target": target, "since": since, "until": until}
    given |= {"cursor": cursor, "limit": limit}
    for name, value in given.items():
        if value is not None and len(value) > MAX_FILTER:
            errors.append({"loc": ["query", name], "msg": f"at most {MAX_FILTER} characters"})
            given[name] = None  # (not looked at further)
    actor, action, target, since, until = (given[k] for k in ("actor", "action", "target", "since", "until"))
    cursor, limit = given["cursor"], given["limit"]
    if actor and actor.strip():
        if not actor.strip().isprintable():
            errors.append({"loc": ["query", "actor"], "msg": "printable text only"})
        found.actor = actor.strip()
    if action and action.strip():
        if not ACTION.match(action.strip()):
            errors.append(
                {"loc": ["query", "action"], "msg": "an action such as login.failed, or a family: login"}
            )
        found.action = action.strip()
    if target and target.strip():
        kind, _, ident = target.strip().partition(":")
        if kind not in TARGET_KINDS:
            errors.append(
                {"loc": ["query", "target"], "msg": f"KIND or KIND:ID; kinds: {', '.join(TARGET_KINDS)}"}
            )
        elif ident and not ident.isprintable():
            errors.append({"loc": ["query", "target"], "msg": "printable text only"})
        found.target_kind, found.target_id = kind, ident or None
    if since and since.strip():
        found.since = _time(since, "since", errors)
    if until and until.strip():
        found.until = _time(until, "until", errors)
    if found.since and found.until and found.since > found.until:
        errors.append({"loc": ["query", "until"], "msg": "until is before since"})
    if limit is not None and limit.strip():
        text = limit.strip()
        if not text.isdigit() or not 1 <= int(text[:6]) <= MAX_PAGE_SIZE:
            errors.append({"loc": ["query", "limit"], "msg": f"a whole number from 1 to {MAX_PAGE_SIZE}"})
        else:
            found.limit = int(text)
    if cursor:
        try:
            decode_cursor(cursor)
        except InvalidInput as exc:
            errors.extend(exc.errors or [])
    if errors:
        raise InvalidInput("Some filters are not valid.", errors=errors)
    return found


def events(session: Session, flt: AuditFilter, cursor: str | None) -> Page[AuditEvent]:
    """Newest first."""
    stmt = select(AuditEvent)
    if flt.actor:
        try:
            as_id: uuid.UUID | None = uuid.UUID(flt.actor)
        except ValueError:
            as_id = None
        if as_id is not None:
            stmt = stmt.where(AuditEvent.actor_id == as_id)
        else:
            stmt = stmt.where(
                or_(
                    func.lower(AuditEvent.actor_email) == flt.actor.lower(),
                    AuditEvent.actor_label == flt.actor,
                )
            )
    if flt.action:
        family = "." not in flt.action
        stmt = stmt.where(
            or_(
                AuditEvent.action == flt.action,
                AuditEvent.action.startswith(f"{flt.action}.", autoescape=True),
            )
            if family
            else AuditEvent.action == flt.action
        )
    if flt.target_kind:
        stmt = stmt.where(AuditEvent.target_kind == flt.target_kind)
    if flt.target_id:
        stmt = stmt.where(AuditEvent.target_id == flt.target_id)
    if flt.since:
        stmt = stmt.where(AuditEvent.at >= flt.since)
    if flt.until:
        stmt = stmt.where(AuditEvent.at <= flt.until)
    return paginate(session, stmt, AuditEvent.id, limit=flt.limit, cursor=cursor, newest_first=True)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at,
        "actor": {
            "kind": event.actor_kind,
            "id": event.actor_id,
            "email": event.actor_email,
            "label": event.actor_label,
            "token_id": event.token_id,
        },
        "action": event.action,
        "target": {"kind": event.target_kind, "id": event.target_id} if event.target_kind else None,
        "details": event.details,
        "ip": event.ip,
        "user_agent": event.user_agent,
    }
