"""A role given by hand is no longer a provider's grant: a later login whose claim no longer gives it must not
take it back (see :func:`labcloud.services.sso_accounts.apply_roles`)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import SsoIdentity


def forget(
    session: Session, user_id: uuid.UUID, *, admin: bool = False, project_id: uuid.UUID | None = None
) -> None:
    """Forget that the user's identities' claims granted administrator (``admin``) or a role in a project."""
    stmt = select(SsoIdentity).where(SsoIdentity.user_id == user_id, SsoIdentity.granted.is_not(None))
    for identity in session.scalars(stmt):
        granted = dict(identity.granted or {})
        if admin:
            granted["admin"] = False
        if project_id is not None:
            granted["projects"] = {
                k: v for k, v in dict(granted.get("projects") or {}).items() if k != str(project_id)
            }
        if granted != identity.granted:
            identity.granted = granted
