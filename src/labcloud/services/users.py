"""Accounts: creation, authentication, profile and password changes, admin changes."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud import security
from labcloud.db.models import User
from labcloud.db.types import utcnow
from labcloud.errors import Conflict, InvalidInput, NotFound, TooManyRequests, Unauthorized
from labcloud.ratelimit import LoginThrottle
from labcloud.services import audit, sessions, sso_grants
from labcloud.services.pagination import Page, paginate
from labcloud.settings import Settings

log = logging.getLogger(__name__)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_strength(password: str, settings: Settings, field: str = "password") -> None:
    if len(password) < settings.min_password_length:
        raise InvalidInput.field(
            ["body", field], f"the password must have at least {settings.min_password_length} characters"
        )


def get_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"There is no user with id {user_id}.")
    return user


def find_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def create_user(
    session: Session,
    settings: Settings,
    *,
    email: str,
    password: str,
    name: str = "",
    is_admin: bool = False,
    issued: bool = False,
) -> User:
    """A new account; ``issued``: its password was chosen by an administrator, not by its user, who is
    asked to choose their own at their first login."""
    check_password_strength(password, settings)
    email = normalise_email(email)
    if find_by_email(session, email) is not None:
        raise Conflict(f"A user with email {email} already exists.")
    user = User(
        email=email,
        name=name.strip(),
        password_hash=security.hash_password(password),
        is_admin=is_admin,
        must_change_password=issued,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request created the same email first
        session.rollback()
        raise Conflict(f"A user with email {email} already exists.") from None
    audit.record(session, "user.created", "user", user.id, {"email": email, "admin": is_admin})
    log.info("user created: %s (admin=%s)", email, is_admin)
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with these credentials, or None. Takes the same time for unknown accounts."""
    user, _, _ = _check_login(session, email, password)
    return user


def _check_login(session: Session, email: str, password: str) -> tuple[User | None, User | None, str]:
    """The active user with these credentials or None; the account the email names, if any; and why the
    login fails ("" when it does not), for the audit log only."""
    user = find_by_email(session, email)
    ok = security.verify_password(password, user.password_hash if user else None)
    if user is None:
        return None, None, "unknown_account"
    if not ok:
        return None, user, "wrong_password"
    if not user.is_active:
        return None, user, "deactivated"
    user.last_login_at = utcnow()
    return user, user, ""


def update_profile(user: User, *, name: str | None, notify_email: str | None = None) -> User:
    if name is not None:
        user.name = name.strip()
    if notify_email is not None:
        user.notify_email = notify_email
    return user


def change_password(
    session: Session, settings: Settings, user: User, *, current_password: str, new_password: str
) -> None:
    if not security.verify_password(current_password, user.password_hash):
        raise InvalidInput.field(["body", "current_password"], "the current password is not correct")
    check_password_strength(new_password, settings, "new_password")
    user.password_hash = security.hash_password(new_password)
    user.must_change_password = False
    user.token_version += 1  # login tokens issued with the old password stop working
    sessions.end_all(session, user)  # and so does every browser logged in with it
    audit.record(session, "user.password_changed", "user", user.id, {"email": user.email})
    log.info("password changed for %s", user.email)


def active_admins(session: Session) -> int:
    stmt = select(func.count()).select_from(User).where(User.is_admin.is_(True), User.is_active.is_(True))
    return session.scalar(stmt) or 0


def admin_update(
    session: Session,
    settings: Settings,
    user: User,
    *,
    name: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
    password: str | None = None,
) -> User:
    """An admin's change to an account. The last active admin cannot be demoted or deactivated."""
    loses_admin = user.is_admin and user.is_active and (is_admin is False or is_active is False)
    if loses_admin and active_admins(session) <= 1:
        raise Conflict("This is the last active admin; promote another user first.")
    update_profile(user, name=name)
    if is_admin is not None and is_admin != user.is_admin:
        user.is_admin = is_admin
        sso_grants.forget(session, user.id, admin=True)  # (given or taken by hand now)
        audit.record(session, "user.role_changed", "user", user.id, {"email": user.email, "admin": is_admin})
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        user.token_version += 1
        sessions.end_all(session, user)
        action = "user.activated" if is_active else "user.deactivated"
        audit.record(session, action, "user", user.id, {"email": user.email})
    if password is not None:
        check_password_strength(password, settings)
        user.password_hash = security.hash_password(password)
        user.must_change_password = True  # (the admin knows it: its user chooses their own next)
        user.token_version += 1
        sessions.end_all(session, user)
        audit.record(session, "user.password_reset", "user", user.id, {"email": user.email})
    log.info("user %s updated by an admin", user.email)
    return user


def login(session: Session, throttle: LoginThrottle, email: str, password: str, address: str) -> User:
    """Check a password login, throttled per account at the client's address and per address (429 with
    Retry-After while slowed down; see :mod:`labcloud.ratelimit`). The try is counted before the password
    is checked, so parallel tries cannot slip past the limit."""
    tried = {"email": normalise_email(email)[:320]}
    try:
        attempt = throttle.begin(normalise_email(email), address)
    except TooManyRequests:
        audit.record_apart(
            session.get_bind().engine, "login.failed", details={**tried, "reason": "throttled"}
        )
        raise
    user, named, reason = _check_login(session, email, password)
    if user is None:  # (written apart: the request's transaction is rolled back)
        target = None if named is None else named.id
        details = {**tried, "reason": reason}
        audit.record_apart(session.get_bind().engine, "login.failed", "user", target, details)
        raise Unauthorized("The email or password is not correct.")
    throttle.succeeded(attempt)
    audit.record(session, "login.succeeded", "user", user.id, actor=audit.Actor.of_user(user))
    return user


def set_storage_limit(user: User, limit: int | None) -> None:
    """Bytes this user may store (0: no limit; None: the installation's default). Files already stored
    stay; a user over a lowered limit can only delete until back under it."""
    if limit != user.storage_limit_bytes:
        session = Session.object_session(user)
        if session is not None:
            details = {"email": user.email, "from": user.storage_limit_bytes, "to": limit}
            audit.record(session, "quota.storage_limit_changed", "user", user.id, details)
    user.storage_limit_bytes = limit
    log.info("storage limit of %s set to %s", user.email, "default" if limit is None else limit)


def list_users(session: Session, *, limit: int, cursor: str | None, search: str | None = None) -> Page[User]:
    stmt = select(User)
    if search:
        pattern = f"%{search.strip().lower()}%"
        stmt = stmt.where(User.email.like(pattern) | func.lower(User.name).like(pattern))
    return paginate(session, stmt, User.id, limit=limit, cursor=cursor, newest_first=False)


@dataclass
class InitialAdmin:
    email: str
    password: str | None  # None when it came from the configuration (not ours to print)


def ensure_initial_admin(session: Session, settings: Settings) -> InitialAdmin | None:
    """Create the first admin when there are no users; return it so the caller can say how to log in."""
    if count_users(session) > 0:
        return None
    configured = settings.initial_admin_password.get_secret_value()
    password = configured or security.generate_password()
    email = normalise_email(settings.initial_admin_email)
    user = User(
        email=email,
        name="Administrator",
        password_hash=security.hash_password(password),
        is_admin=True,
        must_change_password=not configured,  # (a generated one was printed on the console)
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # another replica created it at the same moment
        session.rollback()
        return None
    audit.record(session, "user.created", "user", user.id, {"email": email, "admin": True, "initial": True})
    return InitialAdmin(email=email, password=None if configured else password)


# --- setting a password by a link (resets and invitations) ------------------------------------------------

RESET_HOURS, INVITE_HOURS = 1.0, 7 * 24.0


def password_link(settings: Settings, user: User, hours: float) -> str:
    token = security.issue_password_token(user.id, user.token_version, settings.signing_key, hours)
    return f"{settings.public_url.rstrip('/')}/login/set-password?token={token}"


def set_password_by_token(session: Session, settings: Settings, token: str, new_password: str) -> User:
    """Set the password of the account a valid link token names; the token then no longer works (the
    account's token version moves on, and with it every login)."""
    claims = security.decode_password_token(token, settings.signing_key)
    user = None
    if claims is not None:
        try:
            user = session.get(User, uuid.UUID(str(claims["sub"])))
        except ValueError:
            user = None
    if user is None or not user.is_active or claims is None or claims.get("ver") != user.token_version:
        raise InvalidInput.field(
            ["body", "token"],
            "this link is not valid any more (used, expired or replaced); ask for a new one",
        )
    check_password_strength(new_password, settings, "password")
    user.password_hash = security.hash_password(new_password)
    user.must_change_password = False
    user.token_version += 1
    sessions.end_all(session, user)
    audit.record(session, "user.password_changed", "user", user.id, {"email": user.email, "by_link": True})
    log.info("password set by a link for %s", user.email)
    return user


@dataclass(frozen=True)
class LinkMail:
    """A mail with a link to set a password, made while the account is at hand and sent later."""

    to: str
    subject: str
    intro: str
    link: str
    expires: str

    def send(self, settings: Settings) -> None:
        """OSError or smtplib.SMTPException when it cannot be sent."""
        from labcloud.services import mail

        mail.send_link(settings, self.to, self.subject, self.intro, self.link, self.expires)


def password_mail(settings: Settings, user: User, *, invitation: bool) -> LinkMail:
    """The mail with a link to set the user's password: an invitation (valid a week) or a reset (an hour)."""
    if invitation:
        intro = f"You have been invited to labcloud at {settings.public_url}. Choose your password here:"
        return LinkMail(
            user.email,
            "labcloud: your invitation",
            intro,
            password_link(settings, user, INVITE_HOURS),
            "7 days",
        )
    intro = "Someone (we hope you) asked to reset your labcloud password. Choose a new one here:"
    return LinkMail(
        user.email,
        "labcloud: reset your password",
        intro,
        password_link(settings, user, RESET_HOURS),
        "1 hour",
    )


def reset_requested(session: Session, settings: Settings, email: str) -> User | None:
    """The active account a reset was asked for (None: none; the caller answers the same either way)."""
    user = find_by_email(session, email)
    return user if user is not None and user.is_active else None
