"""Administration of accounts."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Query, Response, status
from pydantic import BaseModel, ConfigDict

from labcloud import security
from labcloud.api.deps import Admin, AppSettings, DbSession, PageCursor, PageLimit
from labcloud.api.openapi import problems
from labcloud.api.schemas import PageOut, UserCreate, UserCreated, UserOut, UserUpdate
from labcloud.errors import Conflict
from labcloud.http.guard import GuardedRoute
from labcloud.services import sso_accounts, users
from labcloud.services.pagination import DEFAULT_PAGE_SIZE
from labcloud.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/users", tags=["users"], route_class=GuardedRoute)


@router.get("", response_model=PageOut[UserOut], summary="List users")
def list_users(
    _admin: Admin,
    session: DbSession,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: PageCursor = None,
    q: str | None = Query(None, max_length=200, description="Part of an email or name."),
) -> PageOut[UserOut]:
    page = users.list_users(session, limit=limit, cursor=cursor, search=q)
    return PageOut[UserOut].of(page, UserOut.model_validate)


@router.post(
    "",
    response_model=UserCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
    summary="Invite a user",
)
def create_user(
    body: UserCreate, _admin: Admin, session: DbSession, settings: AppSettings, background: BackgroundTasks
) -> UserCreated:
    """Without a password one is generated and returned once, to hand to the new user; with ``invite``
    they get a mail with a link to choose their own (valid a week), and no password is shown."""
    if body.invite and not settings.smtp_url:
        raise Conflict("This installation sends no e-mail: leave out invite to get a password to hand over.")
    generated = security.generate_password() if body.password is None else None
    user = users.create_user(
        session,
        settings,
        email=body.email,
        password=body.password or generated or "",
        name=body.name,
        is_admin=body.is_admin,
        issued=body.must_change_password,  # (a link lets them choose their own anyway)
    )
    if body.invite:  # (sent once the answer is out: the account is committed by then)
        background.add_task(_send_invitation, users.password_mail(settings, user, invitation=True), settings)
        generated = None
    return UserCreated.model_validate(
        {**UserOut.model_validate(user).model_dump(), "initial_password": generated}
    )


def _send_invitation(mail: users.LinkMail, settings: Settings) -> None:
    try:
        mail.send(settings)
    except Exception as exc:  # (the admin can invite again: PATCH a password, or create anew)
        log.warning("invitation mail to %s not sent: %s", mail.to, exc)


@router.get("/{user_id}", response_model=UserOut, summary="One user")
def get_user(user_id: uuid.UUID, _admin: Admin, session: DbSession) -> UserOut:
    return UserOut.model_validate(users.get_user(session, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses=problems(409),
    summary="Change, promote or deactivate a user",
)
def update_user(
    user_id: uuid.UUID, body: UserUpdate, _admin: Admin, session: DbSession, settings: AppSettings
) -> UserOut:
    user = users.get_user(session, user_id)
    users.admin_update(
        session,
        settings,
        user,
        name=body.name,
        is_admin=body.is_admin,
        is_active=body.is_active,
        password=body.password,
    )
    if "storage_limit_bytes" in body.model_fields_set:  # an explicit null restores the default
        users.set_storage_limit(user, body.storage_limit_bytes)
    return UserOut.model_validate(user)


class IdentityOut(BaseModel):
    id: uuid.UUID
    provider: str
    email: str
    created_at: datetime
    last_login_at: datetime | None

    model_config = ConfigDict(from_attributes=True)


@router.get(
    "/{user_id}/sso-identities",
    response_model=list[IdentityOut],
    summary="The user's identities at single sign-on providers",
)
def list_identities(user_id: uuid.UUID, _admin: Admin, session: DbSession) -> list[IdentityOut]:
    user = users.get_user(session, user_id)
    return [IdentityOut.model_validate(i) for i in sso_accounts.identities(session, user)]


@router.delete(
    "/{user_id}/sso-identities/{identity_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    summary="Unlink an identity: its logins no longer reach this account (until it links again by the rules "
    "of a first login)",
)
def unlink_identity(
    user_id: uuid.UUID, identity_id: uuid.UUID, _admin: Admin, session: DbSession
) -> Response:
    sso_accounts.unlink(session, users.get_user(session, user_id), identity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
