"""Requests for more of a project's quota: a member asks, saying why; the project's managers or an admin
decide (the quota's limit grows by the amount on approval). Requests and decisions stay, as the history of
a project's budget."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labcloud.db.models import Project, Quota, QuotaRequest, User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from labcloud.services import audit
from labcloud.services.quotas import RESOURCES, _quota


def request_more(
    session: Session, user_id: Any, project: Project, resource: str, amount: float, justification: str
) -> QuotaRequest:
    """A member asks for ``amount`` more of a quota the project has, saying why (every bad field at once)."""
    errors = []
    if resource not in RESOURCES:
        errors.append({"loc": ["body", "resource"], "msg": f"one of {', '.join(RESOURCES)}"})
    elif _quota(session, project, resource) is None:
        errors.append(
            {"loc": ["body", "resource"], "msg": f"project {project.slug!r} has no {resource} quota"}
        )
    if not (amount > 0) or math.isinf(amount):
        errors.append({"loc": ["body", "amount"], "msg": "a number above 0"})
    if not 10 <= len(justification.strip()) <= 5000:
        errors.append({"loc": ["body", "justification"], "msg": "say why, in 10 to 5000 characters"})
    if errors:
        raise InvalidInput("Some fields of the request are not valid.", errors=errors)
    found = QuotaRequest(
        project_id=project.id,
        resource=resource,
        amount=float(amount),
        justification=justification.strip(),
        requested_by=user_id,
        state="pending",
        note="",
    )
    session.add(found)
    session.flush()
    return found


def requests_of(session: Session, project: Project) -> list[QuotaRequest]:
    stmt = select(QuotaRequest).where(QuotaRequest.project_id == project.id)
    return list(session.scalars(stmt.order_by(QuotaRequest.created_at.desc())))


def decide(
    session: Session, decider: User, project: Project, request_id: Any, approve: bool, note: str = ""
) -> QuotaRequest:
    """Approve (the quota's limit grows by the amount asked for) or reject a pending request; the decision
    is kept with it. Conflict when it was decided already. Nobody but an admin decides their own request,
    or one of a personal project (whose owner would be granting themselves more)."""
    found = session.get(QuotaRequest, request_id)
    if found is None or found.project_id != project.id:
        raise NotFound(f"Project {project.slug!r} has no quota request {request_id}.")
    if not decider.is_admin:
        if project.personal_user_id is not None:
            raise Forbidden("Requests for a personal project's quotas are decided by an admin.")
        if found.requested_by == decider.id:
            raise Forbidden("Another manager of the project, or an admin, decides your own request.")
    decider_id = decider.id
    decided = session.execute(
        update(QuotaRequest)
        .where(QuotaRequest.id == found.id, QuotaRequest.state == "pending")
        .values(
            state="approved" if approve else "rejected",
            decided_by=decider_id,
            decided_at=utcnow(),
            note=note.strip()[:2000],
        )
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(found)
        raise Conflict(f"That request was {found.state} already.")
    if approve:
        session.execute(
            update(Quota)
            .where(Quota.project_id == project.id, Quota.resource == found.resource)
            .values(limit=Quota.limit + found.amount)
        )
    session.refresh(found)
    details = {
        "project": project.slug,
        "request": found.id,
        "resource": found.resource,
        "amount": found.amount,
    }
    audit.record(session, f"quota.request_{found.state}", "project", project.id, details)
    return found
