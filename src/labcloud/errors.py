"""Domain errors. Services raise these; the API turns each into an ``application/problem+json`` answer."""

from __future__ import annotations

from typing import Any


class LabcloudError(Exception):
    status = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}  # more members of the problem document (RFC 9457 extensions)


class NotFound(LabcloudError):
    status, title, type_slug = 404, "Not found", "not-found"


class Conflict(LabcloudError):
    status, title, type_slug = 409, "Conflict", "conflict"


class Forbidden(LabcloudError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class Unauthorized(LabcloudError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class InvalidInput(LabcloudError):
    """Input that parsed but breaks a domain rule; ``errors`` names the fields."""

    status, title, type_slug = 422, "Invalid input", "validation-error"

    @classmethod
    def field(cls, loc: list[str | int], msg: str) -> InvalidInput:
        return cls(msg, errors=[{"loc": loc, "msg": msg}])


class InvalidPath(InvalidInput):
    """A file path that is not a plain relative path inside the caller's space ('..', absolute, NUL...)."""

    status, title, type_slug = 400, "Invalid path", "invalid-path"


class TooManyRequests(LabcloudError):
    status, title, type_slug = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
