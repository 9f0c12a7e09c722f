"""Passwords, login tokens (JWT) and personal API tokens.

Passwords are argon2 (slow on purpose). API tokens are 256-bit random secrets, so a SHA-256 digest is
enough to store them and checking one costs a single indexed lookup, not a password hash.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

API_TOKEN_PREFIX = "lc_"
JWT_ALGORITHM = "HS256"
JWT_AUDIENCE = "labcloud"

_HASHER = Argon2Hasher()
_password_hash = PasswordHash((_HASHER,))
# A real hash (of a random password, thrown away), checked when the account does not exist so that unknown
# accounts and wrong passwords take the same time: checking costs what its parameters say, which are those
# _HASHER gives new hashes (a test sees to it). Written out rather than made at import, which cost every
# process that imports this module (each server start, each admin command) a password hash: ~0.2 s of CPU.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$aBubERAIgpJUoUq/fWyOGQ$LkVwUI31VkkOx4FLDg6oBfjRC6e5rc3+9INKlBripoA"
)


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


ALL_SCOPES: tuple[Scope, ...] = (Scope.READ, Scope.WRITE, Scope.ADMIN)


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _password_hash.verify(password, _DUMMY_HASH)
        return False
    return _password_hash.verify(password, password_hash)


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def new_api_token() -> tuple[str, str, str]:
    """Return (secret shown once, its digest to store, a short prefix to recognise it by)."""
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, digest_api_token(secret), secret[:10]


def digest_api_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_token(credential: str) -> bool:
    return credential.startswith(API_TOKEN_PREFIX)


def issue_access_token(
    user_id: uuid.UUID,
    token_version: int,
    scopes: list[str],
    key: str,
    minutes: int,
    session_id: uuid.UUID | None = None,
) -> tuple[str, int]:
    """A signed login token; returns it and its lifetime in seconds. A token issued to a browser session
    names it (``sid``) and ends with it."""
    now = datetime.now(UTC)
    lifetime = timedelta(minutes=minutes)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "ver": token_version,
        "scopes": scopes,
        "iat": now,
        "exp": now + lifetime,
        "aud": JWT_AUDIENCE,
    }
    if session_id is not None:
        claims["sid"] = str(session_id)
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM), int(lifetime.total_seconds())


def decode_access_token(token: str, key: str) -> dict[str, Any] | None:
    """The claims of a valid, unexpired login token, or None."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[JWT_ALGORITHM], audience=JWT_AUDIENCE, options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    return claims


PASSWORD_AUDIENCE = "labcloud-password"


def issue_password_token(user_id: uuid.UUID, token_version: int, key: str, hours: float) -> str:
    """A signed link token that lets its holder set the user's password once: it names the account's
    token version, which setting a password bumps (so the token works once), and expires."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "ver": token_version,
        "iat": now,
        "exp": now + timedelta(hours=hours),
        "aud": PASSWORD_AUDIENCE,
    }
    return jwt.encode(claims, key, algorithm=JWT_ALGORITHM)


def decode_password_token(token: str, key: str) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            audience=PASSWORD_AUDIENCE,
            options={"require": ["exp", "sub", "ver"]},
        )
    except jwt.PyJWTError:
        return None
    return claims
