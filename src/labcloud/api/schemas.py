"""Request and response bodies of the accounts API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

from labcloud.security import Scope
from labcloud.services.pagination import Page

T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= to get the next page; null at the end."
    )

    @classmethod
    def of(cls, page: Page[Any], item: Callable[[Any], T]) -> Self:
        """A service's page, each of its rows shown by ``item``."""
        return cls(items=[item(row) for row in page.items], next_cursor=page.next_cursor)


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    storage_used_bytes: int = 0
    storage_limit_bytes: int | None = Field(None, description="null: the installation's default")
    notify_email: str = Field("always", description="An e-mail when a job ends: always, failure, never.")
    must_change_password: bool = Field(False, description="Its password was issued by an administrator.")


class ChatChannelOut(BaseModel):
    scheme: str | None = Field(
        description="The scheme of your chat channel (its URL is a secret, never shown); null: none."
    )


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: str = Field("", max_length=200)
    password: str | None = Field(
        None, max_length=1000, description="Leave out to generate one; it is returned once."
    )
    is_admin: bool = False
    invite: bool = Field(
        False, description="Mail them a link to choose their password (needs smtp_url); none is returned."
    )
    must_change_password: bool = Field(
        True, description="The web asks them to choose a password of their own at their first login."
    )


class UserCreated(UserOut):
    initial_password: str | None = Field(None, description="The generated password, shown only this once.")


class SignUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: str = Field("", max_length=200)
    password: str = Field(max_length=1000)


class UserUpdate(BaseModel):
    """An admin's change to an account."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    is_admin: bool | None = None
    is_active: bool | None = None
    password: str | None = Field(None, max_length=1000)
    storage_limit_bytes: int | None = Field(
        None, ge=0, description="This user's storage limit; 0 means none, null the installation's default."
    )


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    notify_email: Literal["always", "failure", "never"] | None = Field(
        None, description="An e-mail when a job of yours ends: always, on failure only, or never."
    )
    notify_apprise_url: str | None = Field(
        None,
        max_length=2000,
        description="A chat channel told as the e-mail is (an Apprise URL: slack://, matrix://, json://...); "
        '"" removes it. Its host must be a public address unless the installation allows private ones.',
    )


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.READ, Scope.WRITE])
    expires_at: AwareDatetime | None = Field(None, description="Default and maximum: the server's limit.")


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    scopes: list[str]
    prefix: str = Field(description="The first characters of the secret, to tell tokens apart.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret. Shown only this once; store it now.")
