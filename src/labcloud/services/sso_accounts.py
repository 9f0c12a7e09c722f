"""Which account a single sign-on logs into, and what its claims make of it.

- An identity seen before (provider and ``sub``) is its account's, whatever its e-mail says now.
- Otherwise an account with the same e-mail is linked to it, only when the provider says the e-mail is
  verified (``email_verified``, or ``trust_email`` for a provider that verifies all).
- Otherwise an account is made, when the provider allows the e-mail's domain (``allowed_domains``).
- Each login, the claim ``roles_claim`` may make the user an administrator and a member of projects.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import Project, ProjectMember, ProjectRole, SsoIdentity, User
from labcloud.db.types import utcnow
from labcloud.errors import Forbidden
from labcloud.services import audit, users
from labcloud.services.projects import RANK
from labcloud.services.sso import LoginRefused
from labcloud.settings import Settings, SsoProvider

log = logging.getLogger(__name__)


def check_password_login(settings: Settings, email: str) -> None:
    """Refuse a password login when the installation or the account's domain wants single sign-on."""
    if not settings.password_login:
        raise Forbidden("Passwords are turned off on this installation: log in with single sign-on.")
    if not settings.password_allowed_for(email):
        raise Forbidden("Accounts of this e-mail domain log in with single sign-on, not a password.")


def _verified(provider: SsoProvider, claims: dict[str, Any]) -> bool:
    flag = claims.get("email_verified")
    return provider.trust_email or flag is True or (isinstance(flag, str) and flag.lower() == "true")


def account_for(session: Session, settings: Settings, provider: SsoProvider, claims: dict[str, Any]) -> User:
    """The account this login is for (linked or made as the rules say), its roles applied; else
    :class:`LoginRefused`."""
    issuer, subject = str(claims.get("iss", "")), str(claims["sub"])
    email = users.normalise_email(str(claims.get("email") or ""))
    identity = session.scalar(
        select(SsoIdentity).where(SsoIdentity.provider == provider.name, SsoIdentity.subject == subject)
    )
    if identity is not None:
        user = session.get(User, identity.user_id)
        assert user is not None  # (the identity goes with its account)
    else:
        user = _first_login(session, settings, provider, claims, email)
        identity = SsoIdentity(
            user_id=user.id, provider=provider.name, issuer=issuer, subject=subject, email=email
        )
        try:
            with session.begin_nested():
                session.add(identity)
                session.flush()
        except IntegrityError:
            raise LoginRefused(
                "identity_race", "Another login of this identity came first; try again."
            ) from None
    if not user.is_active:
        raise LoginRefused("deactivated", "This account is deactivated.", 403)
    identity.last_login_at = user.last_login_at = utcnow()
    if email and identity.email != email:
        identity.email = email
    apply_roles(session, provider, claims, user)
    return user


def _first_login(
    session: Session, settings: Settings, provider: SsoProvider, claims: dict[str, Any], email: str
) -> User:
    if not email or "@" not in email:
        raise LoginRefused(
            "no_email", "The provider did not tell this account's e-mail (ask for scope email).", 403
        )
    verified = _verified(provider, claims)
    existing = users.find_by_email(session, email)
    if existing is not None:
        if not verified:
            raise LoginRefused(
                "unverified_email",
                "The provider has not verified this e-mail, so it cannot log into the account that has it.",
                403,
            )
        audit.record(session, "sso.linked", "user", existing.id, {"email": email, "provider": provider.name})
        log.info("%s linked to its identity at %s", email, provider.name)
        return existing
    domain = email.rpartition("@")[2]
    if not verified or not ("*" in provider.allowed_domains or domain in provider.allowed_domains):
        raise LoginRefused(
            "not_allowed", "There is no account for this e-mail here; ask an administrator for one.", 403
        )
    user = User(
        email=email,
        name=str(claims.get("name") or "")[:200],
        # A password nobody knows: the account logs in through its provider (an admin may set one).
        password_hash=security.hash_password(secrets.token_urlsafe(32)),
    )
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        raise LoginRefused("identity_race", "Another login of this account came first; try again.") from None
    audit.record(
        session, "user.created", "user", user.id, {"email": email, "admin": False, "sso": provider.name}
    )
    log.info("user created by single sign-on at %s: %s", provider.name, email)
    return user


def identities(session: Session, user: User) -> list[SsoIdentity]:
    """The user's identities at providers, oldest first."""
    stmt = select(SsoIdentity).where(SsoIdentity.user_id == user.id).order_by(SsoIdentity.created_at)
    return list(session.scalars(stmt))


def claim_values(provider: SsoProvider, claims: dict[str, Any]) -> set[str]:
    """The values of the provider's roles claim (a list or a single string; a dotted name reaches into
    objects, e.g. realm_access.roles)."""
    if not provider.roles_claim:
        return set()
    value: Any = claims
    for part in provider.roles_claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(v) for v in value if isinstance(v, str | int)}
    return set()


def apply_roles(session: Session, provider: SsoProvider, claims: dict[str, Any], user: User) -> None:
    """Make the user an administrator and a member of projects as their claim says. Only adds or raises:
    what an administrator gave by hand is not taken away by a login."""
    values = claim_values(provider, claims)
    if values & set(provider.admin_values) and not user.is_admin:
        user.is_admin = True
        details = {"email": user.email, "admin": True, "sso": provider.name}
        audit.record(session, "user.role_changed", "user", user.id, details)
    for value, target in provider.project_roles.items():
        if value not in values:
            continue
        slug, _, role_name = target.partition(":")
        role = ProjectRole(role_name or "member")
        project = session.scalar(select(Project).where(Project.slug == slug))
        if project is None or project.personal_user_id is not None:
            log.warning("sso %s: project %r of claim value %r does not exist", provider.name, slug, value)
            continue
        current = session.get(ProjectMember, (project.id, user.id))
        if current is not None and RANK[ProjectRole(current.role)] >= RANK[role]:
            continue
        was = None if current is None else ProjectRole(current.role).value
        if current is None:
            session.add(ProjectMember(project_id=project.id, user_id=user.id, role=role))
        else:
            current.role = role
        session.flush()
        details = {
            "project": project.slug,
            "member": user.email,
            "from": was,
            "to": role.value,
            "sso": provider.name,
        }
        audit.record(session, "project.role_changed", "project", project.id, details)
