"""What the client raises. Every failure is a :class:`ClientError`; an answer of the server that is not a
success is one of its kinds below, carrying the server's problem details (``application/problem+json``:
``type``, ``title``, ``status``, ``detail`` and, for invalid input, ``errors`` naming each field).

Importing this module does not import httpx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from labcloud.client.models import JobInfo

__all__ = [
    "BadRequest",
    "ClientError",
    "Conflict",
    "DownloadMismatch",
    "Forbidden",
    "JobFailed",
    "NotFound",
    "NotLoggedIn",
    "QuotaExceeded",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "Unreachable",
    "UploadMismatch",
    "ValidationError",
    "WaitTimeout",
]


class ClientError(Exception):
    """A request that did not succeed.

    ``status`` is the HTTP status (0 when there was no answer: the server was not reached, or the failure
    happened on this side), ``detail`` the server's explanation, ``errors`` its list of ``{loc, msg}`` for
    the fields at fault, ``title`` and ``type`` the problem's kind, ``problem`` the whole problem body (an
    empty dict when the answer had none) and ``retry_after`` the seconds the server asked to wait (or
    None).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        title: str = "",
        type: str = "",
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.title = title
        self.type = type
        self.problem = problem or {}
        self.retry_after = retry_after

    @property
    def fields(self) -> list[str]:
        """The fields at fault, dotted (``params.threshold``), in the order the server named them."""
        return [field_name(e.get("loc", [])) for e in self.errors]

    @property
    def field(self) -> str | None:
        """The first field at fault (``params.threshold``), or None when the server named none."""
        names = self.fields
        return names[0] if names else None

    def __str__(self) -> str:
        if not self.errors:
            return self.detail
        if all(str(e.get("msg", "")) in self.detail for e in self.errors):  # the detail says it already
            return f"{self.detail} ({', '.join(self.fields)})"
        named = "; ".join(f"{field_name(e.get('loc', []))}: {e.get('msg', '')}" for e in self.errors)
        return f"{self.detail} ({named})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.detail!r})"

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        """The error an answer stands for: its problem+json body (or whatever a proxy sent instead), as the
        kind of :class:`ClientError` its status (and problem type) says."""
        detail = ""
        errors: list[dict[str, Any]] = []
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = None
        problem: dict[str, Any] = body if isinstance(body, dict) else {}
        if problem:
            raw = problem.get("detail")
            if isinstance(raw, str):
                detail = raw
            elif isinstance(raw, list):  # FastAPI's default shape, should a route bypass the handlers
                errors = [e for e in raw if isinstance(e, dict)]
            errors = errors or [e for e in problem.get("errors") or [] if isinstance(e, dict)]
            detail = detail or str(problem.get("title") or "")
        elif response.text.strip():
            detail = response.text.strip().splitlines()[0][:200]
        status = response.status_code
        kind = _kind(status, str(problem.get("type") or ""))
        return kind(
            status,
            detail or response.reason_phrase or "request failed",
            errors,
            title=str(problem.get("title") or response.reason_phrase or ""),
            type=str(problem.get("type") or ""),
            problem=problem,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )


class Unreachable(ClientError):
    """No answer: the server could not be reached, or did not answer in time (``status`` 0)."""


class NotLoggedIn(ClientError):
    """There is no token to send: log in (``labcloud login`` or :meth:`Client.login`), or set
    ``LABCLOUD_TOKEN`` (``status`` 0)."""


class BadRequest(ClientError):
    """400: the request is malformed, e.g. a path with ``..`` in it."""


class Unauthorized(ClientError):
    """401: no credential, or one the server does not accept (expired, revoked, mistyped)."""


class Forbidden(ClientError):
    """403: the credential is good but may not do this (a read-only token, an admin's request, or your role
    in a project is too low for it: the detail names the role it needs)."""


class NotFound(ClientError):
    """404 (or 410): there is no such app, job, file, project or upload, or it is another user's (a project
    you have no role in, and its jobs, do not exist for you)."""


class Conflict(ClientError):
    """409: the request clashes with the current state, e.g. cancelling a job that has ended."""


class QuotaExceeded(ClientError):
    """413 (or a problem of type ``quota-exceeded``): the request would pass a limit: your storage limit
    (the detail says how much room is left), the largest upload, or the largest request body."""


class ValidationError(ClientError):
    """422: invalid input. :attr:`field` names the first field at fault (``params.threshold``), :attr:`fields`
    all of them, and ``errors`` has each one's message."""


class RateLimited(ClientError):
    """429: too many tries (failed logins); ``retry_after`` says when to try again."""


class ServerError(ClientError):
    """5xx: the server failed; the request may or may not have been carried out."""


class ServiceUnavailable(ServerError):
    """503: the server is busy or not ready; nothing was changed. Try again after ``retry_after``."""


class UploadMismatch(ClientError):
    """The file the server stored is not the local file (its SHA-256 differs, or the file changed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)


class DownloadMismatch(ClientError):
    """A downloaded file is not what the server holds (its SHA-256 differs; the file is removed), or the
    server named a path outside the destination."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)


class JobFailed(ClientError):
    """A job that was waited for with ``check=True`` did not succeed; ``job`` is the ended job."""

    def __init__(self, job: JobInfo) -> None:
        text = f"job {job.id} {job.state}"
        if job.reason:
            text += f" ({job.reason}" + (
                f", exit code {job.exit_code})" if job.exit_code is not None else ")"
            )
        if job.message:
            text += f": {job.message}"
        super().__init__(0, text)
        self.job = job


class WaitTimeout(ClientError, TimeoutError):
    """A job did not end within the time given to ``wait``; ``job`` is its last known state."""

    def __init__(self, job: JobInfo, timeout: float) -> None:
        super().__init__(0, f"job {job.id} is still {job.state} after {timeout:g} s")
        self.job = job


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: NotFound,
    413: QuotaExceeded,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def _kind(status: int, problem_type: str) -> type[ClientError]:
    if problem_type.rstrip("/").endswith("/quota-exceeded"):
        return QuotaExceeded
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientError


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to leave to the caller's own back-off


def field_name(loc: Any) -> str:
    """``["body", "params", "threshold"]`` → ``params.threshold`` (where in the request, without "body")."""
    parts = [str(p) for p in loc] if isinstance(loc, list | tuple) else [str(loc)]
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts)


def check_options(function: str, given: Mapping[str, Any], allowed: Any) -> None:
    """Refuse an option the TypedDict ``allowed`` does not name, as Python refuses a keyword argument a
    function does not take (a TypeError), so that a misspelt option is never silently ignored."""
    names = allowed.__required_keys__ | allowed.__optional_keys__
    for name in given:
        if name not in names:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
