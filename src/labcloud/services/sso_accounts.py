"""Which account a single sign-on logs into, and what its claims make of it.

- An identity seen before (provider and ``sub``) is its account's, whatever its e-mail says now.
- Otherwise an account with the same e-mail is linked to it, only when the provider says the e-mail is
  verified (``email_verified``, or ``trust_email`` for a provider that verifies all).
- Otherwise an account is made, when the provider allows the e-mail's domain (``allowed_domains``).
- Each login, the claim ``roles_claim`` makes the user an administrator and a member of projects, and takes
  back what it granted earlier but gives no more (never what was given by hand).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import Project, ProjectMember, ProjectRole, SsoIdentity, User
from labcloud.db.types import utcnow
from labcloud.errors import Forbidden, NotFound
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


def check_passwords_on(settings: Settings) -> None:
    """Refuse setting or resetting a password where nobody logs in with one."""
    if not settings.password_login:
        raise Forbidden(
            "This server signs in through single sign-on: passwords are turned off, so there is none to "
            "reset or set here."
        )


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
    apply_roles(session, provider, claims, user, identity)
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


def _wanted_projects(session: Session, provider: SsoProvider, values: set[str]) -> dict[str, ProjectRole]:
    """Project id → the highest role the claim's values map to."""
    wanted: dict[str, ProjectRole] = {}
    for value, target in provider.project_roles.items():
        if value not in values:
            continue
        slug, _, role_name = target.partition(":")
        role = ProjectRole(role_name or "member")
        project = session.scalar(select(Project).where(Project.slug == slug))
        if project is None or project.personal_user_id is not None:
            log.warning("sso %s: project %r of claim value %r does not exist", provider.name, slug, value)
            continue
        key = str(project.id)
        if key not in wanted or RANK[role] > RANK[wanted[key]]:
            wanted[key] = role
    return wanted


def apply_roles(
    session: Session, provider: SsoProvider, claims: dict[str, Any], user: User, identity: SsoIdentity
) -> None:
    """Roles follow the claim (when the provider has a ``roles_claim``): the login makes the user an
    administrator and a member of projects as the claim says now, and takes back what this identity's claim
    granted at an earlier login but no longer gives (a raised role goes back to what it was). What was given
    by hand stays: a grant changed by hand since the claim gave it is no longer the claim's."""
    if not provider.roles_claim:
        return
    values = claim_values(provider, claims)
    before: dict[str, Any] = dict(identity.granted or {})
    granted: dict[str, Any] = {"admin": False, "projects": {}}
    # Administrator: the claim's grant is taken back only while it still stands as the claim left it.
    base = False if (before.get("admin") and user.is_admin) else user.is_admin
    want = bool(values & set(provider.admin_values))
    target = want or base
    granted["admin"] = want and not base
    if not target and user.is_admin and user.is_active and users.active_admins(session) <= 1:
        log.warning("sso %s: %s stays an administrator, the last one", provider.name, user.email)
        target, granted["admin"] = True, True  # (taken back at a later login, once there is another)
    if target != user.is_admin:
        user.is_admin = target
        details = {"email": user.email, "admin": target, "sso": provider.name}
        audit.record(session, "user.role_changed", "user", user.id, details)
    wanted = _wanted_projects(session, provider, values)
    earlier: dict[str, dict[str, Any]] = dict(before.get("projects") or {})
    for key in sorted(set(wanted) | set(earlier)):
        project = session.get(Project, uuid.UUID(key))
        if project is None:
            continue
        member = session.get(ProjectMember, (project.id, user.id))
        current = None if member is None else ProjectRole(member.role)
        gave = earlier.get(key)
        if gave is not None and current is not None and current.value == gave.get("role"):
            was = gave.get("was")
            base_role = None if was is None else ProjectRole(was)  # the claim's grant, as it left it
        else:
            base_role = current
        role = wanted.get(key)
        if role is not None and (base_role is None or RANK[role] > RANK[base_role]):
            new: ProjectRole | None = role
            granted["projects"][key] = {
                "role": role.value,
                "was": None if base_role is None else base_role.value,
            }
        else:
            new = base_role
        if new == current:
            continue
        if member is None:
            session.add(ProjectMember(project_id=project.id, user_id=user.id, role=new))
        elif new is None:
            session.delete(member)
        else:
            member.role = new
        session.flush()
        details = {
            "project": project.slug,
            "member": user.email,
            "from": None if current is None else current.value,
            "to": None if new is None else new.value,
            "sso": provider.name,
        }
        audit.record(session, "project.role_changed", "project", project.id, details)
    identity.granted = granted


def unlink(session: Session, user: User, identity_id: uuid.UUID) -> SsoIdentity:
    """Take an identity from its account: its logins no longer reach the account, until it links again by
    the rules of a first login. What its claim granted stays, as if given by hand."""
    identity = session.get(SsoIdentity, identity_id)
    if identity is None or identity.user_id != user.id:
        raise NotFound("This account has no such identity.")
    session.delete(identity)
    session.flush()
    details = {"email": user.email, "provider": identity.provider, "identity_email": identity.email}
    audit.record(session, "sso.unlinked", "user", user.id, details)
    log.info("%s: identity at %s unlinked", user.email, identity.provider)
    return identity
